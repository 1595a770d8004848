//! Reranking with a causal LM, as Qwen3-Reranker's model card scores it: each
//! (query, document) pair becomes one prompt (a fixed system prefix, the
//! instruction, query and document, the assistant turn with an empty think block),
//! and the score is P(yes) of the softmax over the "yes" and "no" logits at the last
//! position (the logit reported is logit(yes) − logit(no), whose sigmoid that is).
//!
//! The model is loaded as a `generate` backend: any decoder backend reranks, and
//! backends still see only token ids.

use gllm_api::InferenceBackend;

use crate::error::{Result, RuntimeError};
use crate::tokenizer::TextTokenizer;

/// The system prefix of Qwen3-Reranker's prompt.
pub const PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements \
based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".\
<|im_end|>\n<|im_start|>user\n";

/// The end of the user turn and the assistant turn with an empty think block.
pub const SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";

/// The instruction when the manifest gives none (`[models.options] instruction`).
pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

/// What scoring a pair needs, prepared once per model.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderRerank {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    yes: u32,
    no: u32,
    instruction: String,
    /// The most tokens one prompt may have (the model's context).
    max_tokens: usize,
}

fn tokenizer_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Tokenizer(e.to_string())
}

impl DecoderRerank {
    /// Prepares the prefix, suffix and answer tokens with `tok`; `instruction` overrides
    /// the default one; prompts are at most `max_tokens` long.
    pub fn new(tok: &TextTokenizer, instruction: Option<&str>, max_tokens: usize) -> Result<Self> {
        let answer = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                RuntimeError::Tokenizer(format!(
                    "a decoder reranker needs a `{t}` token; this tokenizer has none"
                ))
            })
        };
        Ok(Self {
            prefix: tok.encode(PREFIX, false).map_err(tokenizer_err)?.ids,
            suffix: tok.encode(SUFFIX, false).map_err(tokenizer_err)?.ids,
            yes: answer("yes")?,
            no: answer("no")?,
            instruction: instruction.unwrap_or(DEFAULT_INSTRUCTION).to_string(),
            max_tokens,
        })
    }

    /// The prompt of one pair: prefix, `<Instruct>: …\n<Query>: …\n<Document>: …`
    /// (the document cut at its end where the prompt would not fit the context), suffix.
    /// An instruction and query that leave no room for a document are an invalid
    /// request: the prefix is never cut.
    pub fn prompt(&self, tok: &TextTokenizer, query: &str, document: &str) -> Result<Vec<u32>> {
        let mut one = self.prompts(tok, query, std::slice::from_ref(&document.to_string()))?;
        one.pop()
            .ok_or_else(|| RuntimeError::Internal("no prompt for one document".into()))
    }

    /// [`Self::prompt`] for each of `documents`, the instruction and query checked once.
    /// Each document is cut to [`crate::tokenizer::BYTES_PER_TOKEN_CAP`] bytes per
    /// token of room before it is tokenized with the head (as the model card does).
    pub fn prompts(
        &self,
        tok: &TextTokenizer,
        query: &str,
        documents: &[String],
    ) -> Result<Vec<Vec<u32>>> {
        let head = format!(
            "<Instruct>: {}\n<Query>: {query}\n<Document>: ",
            self.instruction
        );
        let fixed = self.prefix.len() + self.suffix.len();
        let room = self.max_tokens.saturating_sub(fixed);
        let head_len = tok.encode(&head, false).map_err(tokenizer_err)?.ids.len();
        if head_len >= room {
            return Err(RuntimeError::InvalidRequest(format!(
                "the reranker's instruction and the query take {} tokens with the prompt's \
                 fixed {fixed}; the model's context is {}",
                head_len, self.max_tokens
            )));
        }
        documents
            .iter()
            .map(|document| {
                let document = crate::tokenizer::capped_for(document, room);
                let mut body = tok
                    .encode(&format!("{head}{document}"), false)
                    .map_err(tokenizer_err)?
                    .ids;
                body.truncate(room);
                let mut ids = Vec::with_capacity(fixed + body.len());
                ids.extend_from_slice(&self.prefix);
                ids.extend_from_slice(&body);
                ids.extend_from_slice(&self.suffix);
                Ok(ids)
            })
            .collect()
    }

    /// logit(yes) − logit(no) at the last position of `prompt`, on a fresh cache.
    pub fn logit(
        &self,
        backend: &dyn InferenceBackend,
        prompt: &[u32],
    ) -> std::result::Result<f32, gllm_api::BackendError> {
        let mut cache = backend.new_cache()?;
        let logits = backend.forward(cache.as_mut(), prompt)?;
        match (logits.get(self.yes as usize), logits.get(self.no as usize)) {
            (Some(y), Some(n)) => Ok(y - n),
            _ => Err(gllm_api::BackendError::internal(format!(
                "the backend returned {} logits; the answer tokens are {} and {}",
                logits.len(),
                self.yes,
                self.no
            ))),
        }
    }
}
