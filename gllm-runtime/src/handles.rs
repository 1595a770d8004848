//! Async handles over loaded models: cheap to clone, usable from many tasks.
//! Model work runs on tokio's blocking threads, never on the async workers.

use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use gllm_api::{EncodedInput, Task};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use crate::chat_template::ChatMessage;
use crate::error::{Result, RuntimeError};
use crate::generate;
pub use crate::generate::{FinishReason, Generation};
use crate::model_files::Activation;
use crate::sampling::SamplingParams;
use crate::served::{ActiveBackend, Sequence, ServedModel};

/// Extra chat-template variables, as transformers' `apply_chat_template(**kwargs)` takes them.
pub type TemplateKwargs = serde_json::Map<String, serde_json::Value>;

/// Inputs per backend call for embed/rerank (sorted by length, so padding stays small).
const BATCH_SIZE: usize = 32;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Internal(format!("model worker failed: {e}")))?
}

fn check_task(model: &ServedModel, task: Task, wanted: &'static str) -> Result<()> {
    if model.entry.task != task {
        return Err(RuntimeError::WrongTask {
            id: model.entry.id.clone(),
            actual: model.entry.task,
            wanted,
        });
    }
    Ok(())
}

/// Runs `f` over `inputs` in length-sorted batches and returns the rows in input order.
fn batched<T: Send>(
    model: &ServedModel,
    inputs: &[EncodedInput],
    f: impl Fn(
        &dyn gllm_api::InferenceBackend,
        &[EncodedInput],
    ) -> std::result::Result<Vec<T>, gllm_api::BackendError>,
) -> Result<Vec<T>> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].ids.len()));
    let mut out: Vec<Option<T>> = (0..inputs.len()).map(|_| None).collect();
    for chunk in order.chunks(BATCH_SIZE) {
        let batch: Vec<EncodedInput> = chunk.iter().map(|&i| inputs[i].clone()).collect();
        let rows = model.run(|b| f(b, &batch))?;
        if rows.len() != chunk.len() {
            return Err(RuntimeError::Internal(format!(
                "backend returned {} rows for {} inputs",
                rows.len(),
                chunk.len()
            )));
        }
        for (&i, row) in chunk.iter().zip(rows) {
            out[i] = Some(row);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Embedding {
    /// The vector.
    pub embedding: Vec<f32>,
    /// Tokens of the input after truncation (special tokens included).
    pub tokens: usize,
}

/// Embeds texts with one model.
#[derive(Clone)]
pub struct EmbedderHandle {
    pub(crate) model: Arc<ServedModel>,
}

impl EmbedderHandle {
    pub(crate) fn new(model: Arc<ServedModel>) -> Result<Self> {
        check_task(&model, Task::Embed, "embed")?;
        Ok(Self { model })
    }

    /// The backend and device in use.
    pub fn active(&self) -> ActiveBackend {
        self.model.active()
    }

    /// Embeds texts (truncated to the model's length); one row per text, in order.
    /// The model's default prompt, if it has one, is prepended.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>> {
        self.embed_with_prompt(texts, None).await
    }

    /// [`EmbedderHandle::embed`] with the model's prompt named `prompt_name`
    /// (`config_sentence_transformers.json`, as sentence-transformers' `prompt_name`)
    /// prepended to every text; `None` takes the default prompt. An unknown name is an
    /// invalid request listing the model's prompts.
    pub async fn embed_with_prompt(
        &self,
        texts: Vec<String>,
        prompt_name: Option<String>,
    ) -> Result<Vec<Embedding>> {
        let this = self.clone();
        blocking(move || this.embed_blocking_with_prompt(&texts, prompt_name.as_deref())).await
    }

    /// [`EmbedderHandle::embed`] on the calling thread.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        self.embed_blocking_with_prompt(texts, None)
    }

    /// [`EmbedderHandle::embed_with_prompt`] on the calling thread.
    pub fn embed_blocking_with_prompt(
        &self,
        texts: &[String],
        prompt_name: Option<&str>,
    ) -> Result<Vec<Embedding>> {
        let inputs = self.tokenize_all(texts, prompt_name)?;
        self.embed_encoded(&inputs)
    }

    /// The model's prompt names.
    pub fn prompt_names(&self) -> Vec<String> {
        self.model.text.prompts.by_name.keys().cloned().collect()
    }

    /// Tokenizes `texts` with the prompt of `prompt_name` prepended.
    pub fn tokenize_all(
        &self,
        texts: &[String],
        prompt_name: Option<&str>,
    ) -> Result<Vec<EncodedInput>> {
        let prompt = self.model.text.prompts.text(prompt_name)?;
        texts
            .iter()
            .map(|t| {
                self.model
                    .text
                    .tokenizer
                    .encode(&format!("{prompt}{t}"), true)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    /// Embeds already tokenized inputs.
    pub fn embed_encoded(&self, inputs: &[EncodedInput]) -> Result<Vec<Embedding>> {
        let rows = batched(&self.model, inputs, |b, batch| b.embed(batch))?;
        Ok(rows
            .into_iter()
            .zip(inputs)
            .map(|(embedding, i)| Embedding {
                embedding,
                tokens: i.ids.len(),
            })
            .collect())
    }

    /// Tokenizes without embedding (for counting tokens).
    pub fn tokenize(&self, text: &str) -> Result<EncodedInput> {
        self.model
            .text
            .tokenizer
            .encode(text, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }
}

/// One reranked document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RerankResult {
    /// Position of the document in the request.
    pub index: usize,
    /// The activated score (sigmoid for a one-label cross-encoder).
    pub score: f32,
    /// The raw logit.
    pub logit: f32,
    /// The document, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// Scores documents against a query with one cross-encoder.
#[derive(Clone)]
pub struct RerankerHandle {
    pub(crate) model: Arc<ServedModel>,
}

impl RerankerHandle {
    pub(crate) fn new(model: Arc<ServedModel>) -> Result<Self> {
        check_task(&model, Task::Rerank, "rerank")?;
        Ok(Self { model })
    }

    /// The backend and device in use.
    pub fn active(&self) -> ActiveBackend {
        self.model.active()
    }

    /// Scores every document, sorted by score (best first), cut to `top_n`.
    pub async fn rerank(
        &self,
        query: String,
        documents: Vec<String>,
        top_n: Option<usize>,
        return_documents: bool,
    ) -> Result<Vec<RerankResult>> {
        let this = self.clone();
        blocking(move || this.rerank_blocking(&query, &documents, top_n, return_documents)).await
    }

    /// [`RerankerHandle::rerank`] on the calling thread.
    pub fn rerank_blocking(
        &self,
        query: &str,
        documents: &[String],
        top_n: Option<usize>,
        return_documents: bool,
    ) -> Result<Vec<RerankResult>> {
        let pairs = self.encode_pairs(query, documents)?;
        let rows = self.score_encoded(&pairs)?;
        let mut results: Vec<RerankResult> = rows
            .into_iter()
            .enumerate()
            .map(|(index, (logit, score))| RerankResult {
                index,
                score,
                logit,
                document: return_documents.then(|| documents[index].clone()),
            })
            .collect();
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        if let Some(n) = top_n {
            results.truncate(n);
        }
        Ok(results)
    }

    /// The pair encodings of `query` with each document, as the backend receives them
    /// (for a decoder reranker: the whole scoring prompts). The query is tokenized once.
    pub fn encode_pairs(&self, query: &str, documents: &[String]) -> Result<Vec<EncodedInput>> {
        let tok = &self.model.text.tokenizer;
        match &self.model.text.decoder_rerank {
            Some(dr) => Ok(dr
                .prompts(tok, query, documents)?
                .into_iter()
                .map(EncodedInput::new)
                .collect()),
            None => tok
                .encode_pairs(query, documents)
                .map_err(|e| RuntimeError::Tokenizer(e.to_string())),
        }
    }

    /// `(logit, activated score)` of each encoded pair ([`Self::encode_pairs`]), in order;
    /// pairs of different queries may share a call.
    pub fn score_encoded(&self, pairs: &[EncodedInput]) -> Result<Vec<(f32, f32)>> {
        let (rows, act) = match &self.model.text.decoder_rerank {
            Some(dr) => {
                let rows = pairs
                    .iter()
                    .map(|p| self.model.run(|b| dr.logit(b, &p.ids)).map(|l| vec![l]))
                    .collect::<Result<Vec<_>>>()?;
                // P(yes) of the softmax over (no, yes) is the sigmoid of yes − no.
                (rows, Activation::Sigmoid)
            }
            None => (
                batched(&self.model, pairs, |b, batch| b.rerank(batch))?,
                self.model.text.activation,
            ),
        };
        rows.into_iter()
            .map(|row| {
                let logit = *row.first().ok_or_else(|| {
                    RuntimeError::Internal("backend returned an empty logit row".into())
                })?;
                Ok((logit, act.apply(logit)))
            })
            .collect()
    }

    /// The pair encoding of (query, document), as the backend receives it (for a
    /// decoder reranker: the whole scoring prompt).
    pub fn encode_pair(&self, query: &str, document: &str) -> Result<EncodedInput> {
        self.encode_pairs(query, std::slice::from_ref(&document.to_string()))?
            .pop()
            .ok_or_else(|| RuntimeError::Internal("no encoding for one pair".into()))
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Prompt text (tokenized with the tokenizer's special tokens).
    pub prompt: String,
    /// Sampling and stop parameters.
    pub params: SamplingParams,
}

/// An event of a generation stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// New text; all deltas concatenate to the full text.
    Delta(String),
    /// The end, with the whole result.
    Done(Generation),
}

/// A prompt tokenized for generation, before any work is admitted: a server can size
/// the request (its KV memory) from `ids` first, then run it with
/// [`GeneratorHandle::prepared_stream_holding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// Leading tokens a truncation keeps (a chat's system turn).
    keep: usize,
}

/// An event of one answer of a request for several ([`GeneratorHandle::chat_choices_stream_holding`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceEvent {
    /// Which answer (0-based).
    pub index: usize,
    /// Its text or its end.
    pub event: StreamEvent,
}

/// Generates text with one decoder model.
#[derive(Clone)]
pub struct GeneratorHandle {
    pub(crate) model: Arc<ServedModel>,
}

impl GeneratorHandle {
    pub(crate) fn new(model: Arc<ServedModel>) -> Result<Self> {
        check_task(&model, Task::Generate, "generate text")?;
        Ok(Self { model })
    }

    /// The backend and device in use.
    pub fn active(&self) -> ActiveBackend {
        self.model.active()
    }

    /// The model's sampling defaults (from generation_config.json).
    pub fn default_params(&self) -> SamplingParams {
        self.model.text.defaults.clone()
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.model.text.eos_ids
    }

    /// Tokenizes a prompt as `generate` does.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenize(prompt, true)
    }

    /// Tokenizes a text, with the tokenizer's special tokens (BOS) or without.
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .model
            .text
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?
            .ids)
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.model
            .text
            .tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    /// The raw bytes of a token (a special token's text), as OpenAI's logprobs report them.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        Ok(self.model.grammar()?.token_bytes(id))
    }

    /// Checks that constrained decoding can follow `grammar` with this model (the
    /// error names what llguidance refused), without generating.
    pub fn check_grammar(&self, grammar: &crate::Grammar) -> Result<()> {
        self.model
            .grammar()?
            .constraint(grammar)
            .map(drop)
            .map_err(|e| {
                RuntimeError::InvalidRequest(format!("the grammar or schema cannot be used: {e}"))
            })
    }

    /// Renders a conversation with the model's chat template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_chat_with(messages, add_generation_prompt, &TemplateKwargs::new())
    }

    /// [`GeneratorHandle::render_chat`] with extra template variables (e.g. `enable_thinking`),
    /// as transformers' `apply_chat_template(..., **kwargs)`.
    pub fn render_chat_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        kwargs: &TemplateKwargs,
    ) -> Result<String> {
        let tmpl =
            self.model
                .text
                .chat_template
                .as_ref()
                .ok_or_else(|| RuntimeError::ModelFiles {
                    id: self.model.entry.id.clone(),
                    message: "the model has no chat template".into(),
                })?;
        tmpl.render_with(messages, add_generation_prompt, kwargs)
            .map_err(RuntimeError::Template)
    }

    /// The token ids of a rendered conversation (no special tokens added: the template has them).
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode_chat_with(messages, &TemplateKwargs::new())
    }

    /// [`GeneratorHandle::encode_chat`] with extra template variables.
    pub fn encode_chat_with(
        &self,
        messages: &[ChatMessage],
        kwargs: &TemplateKwargs,
    ) -> Result<Vec<u32>> {
        let text = self.render_chat_with(messages, true, kwargs)?;
        Ok(self
            .model
            .text
            .tokenizer
            .encode(&text, false)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?
            .ids)
    }

    /// Generates from prompt ids on the calling thread; `on_delta` gets each piece of text.
    pub fn generate_ids_blocking(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        on_delta: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.run_choices(prompt, 0, params, 1, &mut |_, d| on_delta(d))?
            .pop()
            .ok_or_else(|| RuntimeError::Internal("a generation gave no result".into()))
    }

    /// How many leading tokens of a conversation's `ids` are its system turn (0 without
    /// one): what [`SamplingParams::truncate_prompt`] keeps of a chat.
    fn system_turn_len(
        &self,
        messages: &[ChatMessage],
        kwargs: &TemplateKwargs,
        ids: &[u32],
    ) -> usize {
        let Some(first) = messages.first().filter(|m| m.role == "system") else {
            return 0;
        };
        self.render_chat_with(std::slice::from_ref(first), false, kwargs)
            .ok()
            .and_then(|text| self.model.text.tokenizer.encode(&text, false).ok())
            .map(|e| e.ids)
            .filter(|sys| ids.starts_with(sys))
            .map_or(0, |sys| sys.len())
    }

    /// Answers a conversation on the calling thread.
    fn chat_blocking(
        &self,
        messages: &[ChatMessage],
        kwargs: &TemplateKwargs,
        params: &SamplingParams,
        on_delta: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.chat_choices_blocking(messages, kwargs, params, 1, &mut |_, d| on_delta(d))?
            .pop()
            .ok_or_else(|| RuntimeError::Internal("a generation gave no result".into()))
    }

    /// `n` answers to a conversation on the calling thread (one prefill).
    fn chat_choices_blocking(
        &self,
        messages: &[ChatMessage],
        kwargs: &TemplateKwargs,
        params: &SamplingParams,
        n: usize,
        on_delta: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Vec<Generation>> {
        let ids = self.encode_chat_with(messages, kwargs)?;
        let keep = self.system_turn_len(messages, kwargs, &ids);
        self.run_choices(&ids, keep, params, n, on_delta)
    }

    /// Runs `n` answers to prompt ids on a sequence from the prompt cache, and leaves
    /// the sequence there afterwards.
    fn run_choices(
        &self,
        ids: &[u32],
        keep: usize,
        params: &SamplingParams,
        n: usize,
        on_delta: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Vec<Generation>> {
        let mut seq = self.model.sequence_for(ids);
        let result = generate::run_choices(&self.model, &mut seq, ids, keep, params, n, on_delta);
        self.model.keep_sequence(seq);
        result
    }

    /// Keeps finished generations' KV caches, up to `budget_bytes`, so that a prompt
    /// beginning as an earlier one did (a chat's next turn) prefills only what is new
    /// ([`Generation::cached_tokens`] counts what was reused). Outputs do not change.
    /// The first call sets the budget. A backend whose caches cannot be copied gets none.
    pub fn enable_prompt_cache(&self, budget_bytes: usize) {
        self.model.enable_prompt_cache(budget_bytes);
    }

    /// The prompt cache's counters (`None` until enabled).
    pub fn prompt_cache_stats(&self) -> Option<crate::PromptCacheStats> {
        self.model.prompt_cache_stats()
    }

    /// Generates the whole text.
    pub async fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        let this = self.clone();
        blocking(move || {
            let ids = this.encode_prompt(&request.prompt)?;
            this.generate_ids_blocking(&ids, &request.params, &mut |_| true)
        })
        .await
    }

    /// Streams text deltas, then a [`StreamEvent::Done`]. Dropping the stream cancels the
    /// generation: the work stops within one decode step or one prefill chunk.
    pub fn generate_stream(
        &self,
        request: GenerateRequest,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.generate_stream_holding(request, ())
    }

    /// [`GeneratorHandle::generate_stream`], holding `guard` until the generation's work
    /// has stopped (which can be after the stream is dropped): for an admission permit
    /// that must cover the work, not only the stream.
    pub fn generate_stream_holding(
        &self,
        request: GenerateRequest,
        guard: impl Send + 'static,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        let this = self.clone();
        self.stream_with(guard, move |on_delta| {
            let ids = this.encode_prompt(&request.prompt)?;
            this.generate_ids_blocking(&ids, &request.params, on_delta)
        })
    }

    /// Tokenizes a conversation (rendered with the chat template) for
    /// [`GeneratorHandle::prepared_stream_holding`].
    pub fn prepare_chat(
        &self,
        messages: &[ChatMessage],
        kwargs: &TemplateKwargs,
    ) -> Result<PreparedPrompt> {
        let ids = self.encode_chat_with(messages, kwargs)?;
        let keep = self.system_turn_len(messages, kwargs, &ids);
        Ok(PreparedPrompt { ids, keep })
    }

    /// Tokenizes a raw prompt (with the tokenizer's special tokens) for
    /// [`GeneratorHandle::prepared_stream_holding`].
    pub fn prepare_prompt(&self, prompt: &str) -> Result<PreparedPrompt> {
        Ok(PreparedPrompt {
            ids: self.encode_prompt(prompt)?,
            keep: 0,
        })
    }

    /// [`GeneratorHandle::chat_choices_stream_holding`] on a prompt tokenized beforehand.
    pub fn prepared_stream_holding(
        &self,
        prompt: PreparedPrompt,
        params: SamplingParams,
        n: usize,
        guard: impl Send + 'static,
    ) -> impl Stream<Item = Result<ChoiceEvent>> + Send + 'static {
        let this = self.clone();
        self.stream_choices(guard, move |on_delta| {
            this.run_choices(&prompt.ids, prompt.keep, &params, n, on_delta)
        })
    }

    /// Bytes of KV cache one position of a sequence takes on the backend in use
    /// (`None` when the backend does not say).
    pub fn kv_bytes_per_token(&self) -> Option<usize> {
        self.model.kv_bytes_per_token()
    }

    /// [`GeneratorHandle::generate_stream_holding`] for `n` answers to the prompt: it is
    /// prefilled once, and answer `i` samples with seed `seed + i` (equal to a single
    /// request with that seed). Each answer's events carry its index; the answers come
    /// one after another.
    pub fn generate_choices_stream_holding(
        &self,
        request: GenerateRequest,
        n: usize,
        guard: impl Send + 'static,
    ) -> impl Stream<Item = Result<ChoiceEvent>> + Send + 'static {
        let this = self.clone();
        self.stream_choices(guard, move |on_delta| {
            let ids = this.encode_prompt(&request.prompt)?;
            this.run_choices(&ids, 0, &request.params, n, on_delta)
        })
    }

    /// [`GeneratorHandle::chat_stream_holding`] for `n` answers (see
    /// [`GeneratorHandle::generate_choices_stream_holding`]).
    pub fn chat_choices_stream_holding(
        &self,
        messages: Vec<ChatMessage>,
        kwargs: TemplateKwargs,
        params: SamplingParams,
        n: usize,
        guard: impl Send + 'static,
    ) -> impl Stream<Item = Result<ChoiceEvent>> + Send + 'static {
        let this = self.clone();
        self.stream_choices(guard, move |on_delta| {
            this.chat_choices_blocking(&messages, &kwargs, &params, n, on_delta)
        })
    }

    /// Answers a conversation (rendered with the chat template).
    pub async fn chat(
        &self,
        messages: Vec<ChatMessage>,
        params: SamplingParams,
    ) -> Result<Generation> {
        let this = self.clone();
        blocking(move || {
            this.chat_blocking(&messages, &TemplateKwargs::new(), &params, &mut |_| true)
        })
        .await
    }

    /// Streams the answer to a conversation.
    pub fn chat_stream(
        &self,
        messages: Vec<ChatMessage>,
        params: SamplingParams,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.chat_stream_with(messages, TemplateKwargs::new(), params)
    }

    /// [`GeneratorHandle::chat_stream`] with extra template variables (e.g. `enable_thinking`).
    pub fn chat_stream_with(
        &self,
        messages: Vec<ChatMessage>,
        kwargs: TemplateKwargs,
        params: SamplingParams,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.chat_stream_holding(messages, kwargs, params, ())
    }

    /// [`GeneratorHandle::chat_stream_with`], holding `guard` until the generation's work
    /// has stopped (see [`GeneratorHandle::generate_stream_holding`]).
    pub fn chat_stream_holding(
        &self,
        messages: Vec<ChatMessage>,
        kwargs: TemplateKwargs,
        params: SamplingParams,
        guard: impl Send + 'static,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        let this = self.clone();
        self.stream_with(guard, move |on_delta| {
            this.chat_blocking(&messages, &kwargs, &params, on_delta)
        })
    }

    /// Runs `work` on a blocking thread, its text as a stream. `work`'s callback gets
    /// each piece of text, and `""` as a poll between steps; it answers `false` once
    /// the stream is dropped. `guard` is dropped when `work` returns.
    fn stream_with(
        &self,
        guard: impl Send + 'static,
        work: impl FnOnce(&mut dyn FnMut(&str) -> bool) -> Result<Generation> + Send + 'static,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.stream_choices(guard, move |on_delta| {
            work(&mut |d| on_delta(0, d)).map(|g| vec![g])
        })
        .map(|e| e.map(|c| c.event))
    }

    /// [`GeneratorHandle::stream_with`] for work that gives several answers: each
    /// piece comes with its answer's index, and every answer's `Done` follows the work.
    fn stream_choices(
        &self,
        guard: impl Send + 'static,
        work: impl FnOnce(&mut dyn FnMut(usize, &str) -> bool) -> Result<Vec<Generation>>
        + Send
        + 'static,
    ) -> impl Stream<Item = Result<ChoiceEvent>> + Send + 'static {
        let (tx, rx) = mpsc::channel(64);
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let sender = tx.clone();
            let mut on_delta = |index: usize, d: &str| {
                if d.is_empty() {
                    return !sender.is_closed();
                }
                sender
                    .blocking_send(Ok(ChoiceEvent {
                        index,
                        event: StreamEvent::Delta(d.to_string()),
                    }))
                    .is_ok()
            };
            match work(&mut on_delta) {
                Ok(gens) => {
                    for (index, g) in gens.into_iter().enumerate() {
                        let done = ChoiceEvent {
                            index,
                            event: StreamEvent::Done(g),
                        };
                        if tx.blocking_send(Ok(done)).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Times a prefill of `prompt_tokens` fixed pseudo-random tokens, then `decode_tokens`
    /// greedy one-token steps (EOS ignored), llama-bench style.
    pub fn bench_blocking(
        &self,
        prompt_tokens: usize,
        decode_tokens: usize,
    ) -> Result<GenerateBench> {
        self.bench_streams_blocking(prompt_tokens, decode_tokens, 1)
    }

    /// [`Self::bench_blocking`] for `streams` sequences at once: each gets its own
    /// pseudo-random prompt, the prompts are prefilled one after another, then every
    /// sequence decodes `decode_tokens` greedy steps on its own thread, all together
    /// (as concurrent requests to a server do; where the backend batches, their
    /// steps share batches).
    pub fn bench_streams_blocking(
        &self,
        prompt_tokens: usize,
        decode_tokens: usize,
        streams: usize,
    ) -> Result<GenerateBench> {
        let streams = streams.max(1);
        let vocab = self.model.active().info.vocab_size.max(2000) as u64;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next_token = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (100 + x % (vocab - 1000)) as u32
        };
        let prompts: Vec<Vec<u32>> = (0..streams)
            .map(|_| (0..prompt_tokens.max(1)).map(|_| next_token()).collect())
            .collect();
        let start = std::time::Instant::now();
        let mut seqs = Vec::with_capacity(streams);
        for prompt in &prompts {
            let mut seq = Sequence::default();
            let logits = self.model.feed(&mut seq, prompt)?;
            seqs.push((seq, logits));
        }
        let prefill = start.elapsed();
        let go = std::sync::Barrier::new(streams + 1);
        let (decode, results) = std::thread::scope(|s| {
            let workers: Vec<_> = seqs
                .into_iter()
                .map(|(mut seq, mut logits)| {
                    let go = &go;
                    s.spawn(move || -> Result<()> {
                        go.wait();
                        for _ in 0..decode_tokens {
                            let next = crate::sampling::argmax(&logits);
                            logits = self.model.feed(&mut seq, &[next])?;
                        }
                        Ok(())
                    })
                })
                .collect();
            go.wait();
            let start = std::time::Instant::now();
            let results: Vec<Result<()>> = workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(RuntimeError::Internal("a benchmark stream panicked".into()))
                    })
                })
                .collect();
            (start.elapsed(), results)
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(GenerateBench {
            streams,
            prompt_tokens: prompt_tokens.max(1),
            prefill,
            decode_tokens,
            decode,
        })
    }

    /// A multi-turn conversation that keeps its KV cache between turns.
    pub fn chat_session(&self, system: Option<String>) -> ChatSession {
        ChatSession {
            handle: self.clone(),
            messages: system
                .map(|s| vec![ChatMessage::new("system", s)])
                .unwrap_or_default(),
            seq: Arc::new(Mutex::new(Sequence::default())),
        }
    }
}

/// Timings of [`GeneratorHandle::bench_blocking`] and
/// [`GeneratorHandle::bench_streams_blocking`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateBench {
    /// Sequences run together.
    pub streams: usize,
    /// Prompt length (each sequence).
    pub prompt_tokens: usize,
    /// Time of all prefills.
    pub prefill: std::time::Duration,
    /// Decode steps (each sequence).
    pub decode_tokens: usize,
    /// Wall time of the decode phase (all sequences at once).
    pub decode: std::time::Duration,
}

impl GenerateBench {
    /// Prompt tokens per second, over all sequences.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        (self.streams * self.prompt_tokens) as f64 / self.prefill.as_secs_f64()
    }

    /// Generated tokens per second, over all sequences.
    pub fn decode_tokens_per_s(&self) -> f64 {
        (self.streams * self.decode_tokens) as f64 / self.decode.as_secs_f64()
    }
}

/// A conversation whose KV cache is reused from turn to turn: each turn feeds only
/// the tokens that the previous turns did not already put in the cache.
#[derive(Clone)]
pub struct ChatSession {
    handle: GeneratorHandle,
    messages: Vec<ChatMessage>,
    seq: Arc<Mutex<Sequence>>,
}

impl ChatSession {
    /// The conversation so far.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Tokens held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.seq.lock().map(|s| s.tokens().len()).unwrap_or(0)
    }

    /// Sends a user message and generates the answer on the calling thread.
    pub fn send_blocking(
        &mut self,
        user: &str,
        params: &SamplingParams,
        on_delta: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.messages.push(ChatMessage::new("user", user));
        let ids = match self.handle.encode_chat(&self.messages) {
            Ok(ids) => ids,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        let mut seq = self
            .seq
            .lock()
            .map_err(|_| RuntimeError::Internal("chat session poisoned".into()))?;
        let keep = self
            .handle
            .system_turn_len(&self.messages, &TemplateKwargs::new(), &ids);
        let result = generate::run(&self.handle.model, &mut seq, &ids, keep, params, on_delta);
        match &result {
            Ok(g) => self
                .messages
                .push(ChatMessage::new("assistant", g.text.clone())),
            Err(_) => {
                self.messages.pop();
            }
        }
        result
    }
}
