//! `POST /v1/chat/completions` and `POST /v1/completions`, with and without
//! server-sent events: `n` answers from one prefill, logprobs, structured outputs
//! (`response_format`) and tool calls (`tools`, `tool_choice`).
//!
//! Every generation runs as a runtime stream, also when the answer is sent whole, so
//! that a request that times out or whose client goes away drops the stream, which
//! cancels the generation and frees its KV cache. A streamed response starts once
//! the first event is there, so that errors found before any output (a bad
//! parameter, a template error, an empty prompt, a schema llguidance refuses) are
//! ordinary HTTP errors.
//!
//! Streamed logprobs come with each answer's last chunk (the one with its
//! `finish_reason`): text pieces do not map one-to-one to tokens.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use gllm_runtime::{
    ChatMessage, ChoiceEvent, FinishReason, Generation, GeneratorHandle, PreparedPrompt,
    RuntimeError, SamplingOverrides, SamplingParams, StreamEvent, ToolCallParser, ToolOutput,
    parse_tool_calls,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::tools::{Tools, response_format, template_kwargs};
use super::{RawJson, blocking, check, json_for, parse};
use crate::error::ApiError;
use crate::metrics::{Metrics, ModelLabel};
use crate::state::{AppState, GenModel, unix_now};
use crate::types::completions::*;

type EventStream = Pin<Box<dyn Stream<Item = Result<ChoiceEvent, RuntimeError>> + Send>>;

/// Most stop strings in one request.
const MAX_STOP: usize = 16;

/// The model's defaults overridden by the request, checked.
fn sampling(
    p: SamplingParams,
    s: Sampling,
    default_max_tokens: Option<usize>,
) -> Result<SamplingParams, ApiError> {
    check(
        s.best_of.unwrap_or(1) == 1,
        "best_of",
        "only `best_of: 1` is supported",
    )?;
    if let Some(t) = s.temperature {
        check(
            (0.0..=2.0).contains(&t),
            "temperature",
            format!("`temperature` must be between 0 and 2, got {t}"),
        )?;
    }
    let p = SamplingOverrides {
        max_tokens: s
            .max_completion_tokens
            .or(s.max_tokens)
            .or(default_max_tokens),
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed.map(|v| v as u64),
        truncate_prompt: s.truncate_prompt,
        // A request without `stop` has none (the model's EOS ids still end it).
        stop: Some(match s.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        }),
    }
    .apply(p);
    check(
        p.stop.len() <= MAX_STOP,
        "stop",
        format!("at most {MAX_STOP} stop strings"),
    )?;
    p.validate().map_err(|m| {
        let param = m.split(' ').next().unwrap_or("").to_string();
        let e = ApiError::invalid(m);
        if param.is_empty() {
            e
        } else {
            e.with_param(&param)
        }
    })?;
    Ok(p)
}

/// `n`, checked against the server's limit.
fn choice_count(n: Option<usize>, max: usize) -> Result<usize, ApiError> {
    let n = n.unwrap_or(1);
    check(
        (1..=max).contains(&n),
        "n",
        format!("`n` must be between 1 and {max} on this server, got {n}"),
    )?;
    Ok(n)
}

/// Chat `logprobs` / `top_logprobs` as the runtime's number of alternatives.
fn chat_logprobs(logprobs: Option<bool>, top: Option<usize>) -> Result<Option<usize>, ApiError> {
    let max = gllm_runtime::MAX_TOP_LOGPROBS;
    if let Some(k) = top {
        check(
            k <= max,
            "top_logprobs",
            format!("`top_logprobs` may be at most {max}, got {k}"),
        )?;
        check(
            logprobs == Some(true),
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        )?;
    }
    Ok(logprobs.unwrap_or(false).then(|| top.unwrap_or(0)))
}

fn text_of(i: usize, content: Option<Content>) -> Result<String, ApiError> {
    Ok(match content {
        None => String::new(),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    _ => {
                        return Err(ApiError::invalid_param(
                            &format!("messages[{i}].content"),
                            format!("only text content parts are supported, got `{}`", p.kind),
                        ));
                    }
                }
            }
            text
        }
    })
}

/// The conversation as the chat template takes it (tool calls and tool answers included).
pub(crate) fn messages(input: Vec<InMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    check(
        !input.is_empty(),
        "messages",
        "`messages` must not be empty",
    )?;
    input
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system".to_string(),
                "system" | "user" | "assistant" | "tool" => m.role,
                other => {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].role"),
                        format!("unknown role `{other}`"),
                    ));
                }
            };
            let mut msg = ChatMessage::new(role, text_of(i, m.content)?);
            if let Some(calls) = m.tool_calls {
                if msg.role != "assistant" {
                    return Err(ApiError::invalid_param(
                        &format!("messages[{i}].tool_calls"),
                        "only assistant messages carry tool calls",
                    ));
                }
                let mut out = Vec::with_capacity(calls.len());
                for (j, c) in calls.into_iter().enumerate() {
                    if !(c.function.arguments.is_string() || c.function.arguments.is_object()) {
                        return Err(ApiError::invalid_param(
                            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
                            "`arguments` must be a JSON string or an object",
                        ));
                    }
                    if c.kind.as_deref().is_some_and(|k| k != "function") {
                        return Err(ApiError::invalid_param(
                            &format!("messages[{i}].tool_calls[{j}].type"),
                            "tool calls are of type `function`",
                        ));
                    }
                    let mut call = Map::new();
                    if let Some(id) = c.id {
                        call.insert("id".into(), Value::String(id));
                    }
                    call.insert("type".into(), json!("function"));
                    call.insert(
                        "function".into(),
                        json!({"name": c.function.name, "arguments": c.function.arguments}),
                    );
                    out.push(Value::Object(call));
                }
                msg.tool_calls = Some(out);
            }
            msg.tool_call_id = m.tool_call_id;
            msg.name = m.name;
            Ok(msg)
        })
        .collect()
}

/// Chat or text completion, and what to do with each answer's text.
#[derive(Clone)]
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    n: usize,
    /// The tool names when the answer is read for tool calls.
    tools: Option<Arc<Vec<String>>>,
    /// Text before each answer (completions' `echo`).
    echo: String,
    /// For the bytes of logprob tokens.
    handle: Option<GeneratorHandle>,
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(gens: &[Generation]) -> Usage {
    let prompt = gens.first().map_or(0, |g| g.prompt_tokens);
    let completion: usize = gens.iter().map(|g| g.token_ids.len()).sum();
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: gens.first().map_or(0, |g| g.cached_tokens),
        },
    }
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn call_id(&self, choice: usize, k: usize) -> String {
        format!("call-{}-{choice}-{k}", self.id)
    }

    fn bytes(&self, id: u32) -> Vec<u8> {
        self.handle
            .as_ref()
            .and_then(|h| h.token_bytes(id).ok())
            .unwrap_or_default()
    }

    fn chat_logprobs(&self, g: &Generation) -> Option<ChoiceLogprobs> {
        if g.logprobs.is_empty() {
            return None;
        }
        let entry = |id: u32, logprob: f32| {
            let bytes = self.bytes(id);
            TopLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                logprob,
                bytes,
            }
        };
        Some(ChoiceLogprobs {
            content: g
                .logprobs
                .iter()
                .map(|lp| {
                    let e = entry(lp.id, lp.logprob);
                    LogprobEntry {
                        token: e.token,
                        logprob: e.logprob,
                        bytes: e.bytes,
                        top_logprobs: lp.top.iter().map(|(id, l)| entry(*id, *l)).collect(),
                    }
                })
                .collect(),
        })
    }

    fn text_logprobs(&self, g: &Generation) -> Option<TextLogprobs> {
        if g.logprobs.is_empty() {
            return None;
        }
        let token = |id: u32| String::from_utf8_lossy(&self.bytes(id)).into_owned();
        let mut offset = self.echo.len();
        let mut out = TextLogprobs {
            tokens: Vec::new(),
            token_logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            text_offset: Vec::new(),
        };
        for lp in &g.logprobs {
            let t = token(lp.id);
            out.text_offset.push(offset);
            offset += t.len();
            out.tokens.push(t);
            out.token_logprobs.push(lp.logprob);
            out.top_logprobs.push(
                lp.top
                    .iter()
                    .map(|(id, l)| (token(*id), json!(l)))
                    .collect(),
            );
        }
        Some(out)
    }

    /// The tool calls of a whole answer, with ids.
    fn calls_of(&self, choice: usize, text: &str) -> Option<(Option<String>, Vec<ToolCallOut>)> {
        let names = self.tools.as_ref()?;
        let parsed = parse_tool_calls(text, names);
        if parsed.calls.is_empty() {
            return None;
        }
        let calls = parsed
            .calls
            .into_iter()
            .enumerate()
            .map(|(k, c)| ToolCallOut {
                id: self.call_id(choice, k),
                kind: "function",
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            })
            .collect();
        let content = (!parsed.content.is_empty()).then_some(parsed.content);
        Some((content, calls))
    }

    fn whole(&self, gens: &[Generation]) -> Value {
        let usage = usage(gens);
        let v = if self.chat {
            let choices = gens
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let (content, tool_calls, finish) = match self.calls_of(i, &g.text) {
                        Some((content, calls)) => (content, calls, "tool_calls"),
                        None => (
                            Some(g.text.clone()),
                            Vec::new(),
                            finish_str(g.finish_reason),
                        ),
                    };
                    ChatChoice {
                        index: i,
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                            tool_calls,
                        },
                        logprobs: self.chat_logprobs(g),
                        finish_reason: finish,
                    }
                })
                .collect();
            serde_json::to_value(self.completion(choices, usage))
        } else {
            let choices = gens
                .iter()
                .enumerate()
                .map(|(i, g)| TextChoice {
                    index: i,
                    text: format!("{}{}", self.echo, g.text),
                    logprobs: self.text_logprobs(g),
                    finish_reason: Some(finish_str(g.finish_reason)),
                })
                .collect();
            serde_json::to_value(self.completion(choices, usage))
        };
        v.unwrap_or(Value::Null)
    }

    fn completion<C>(&self, choices: Vec<C>, usage: Usage) -> Completion<C> {
        Completion {
            id: self.id.clone(),
            object: self.object(false),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
            choices,
            usage,
        }
    }

    fn chunk<C: Serialize>(&self, choices: Vec<C>, usage: Option<Usage>) -> Event {
        let c = Chunk {
            id: self.id.clone(),
            object: self.object(true),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        data(&serde_json::to_value(c).unwrap_or(Value::Null))
    }

    fn chat_delta(&self, index: usize, delta: Delta) -> Event {
        self.chunk(
            vec![ChatChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason: None,
            }],
            None,
        )
    }

    fn text_delta(&self, index: usize, text: &str) -> Event {
        self.chunk(
            vec![TextChoice {
                index,
                text: text.to_string(),
                logprobs: None,
                finish_reason: None,
            }],
            None,
        )
    }
}

/// Checks a grammar off the async threads (the first one builds the model's token table).
async fn check_grammar(
    handle: &GeneratorHandle,
    grammar: &gllm_runtime::Grammar,
    param: &str,
) -> Result<(), ApiError> {
    let (h, g) = (handle.clone(), grammar.clone());
    let param = param.to_string();
    blocking(move || {
        h.check_grammar(&g)
            .map_err(|e| ApiError::from(e).with_param(&param))
    })
    .await
}

pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    // Two typed views of the same bytes (serde's flatten would lose the field names of
    // errors); no untyped JSON tree is built before admission.
    let req: ChatRequest = parse(&body)?;
    let fields: Sampling = parse(&body)?;
    let deadline = Instant::now() + state.options.request_timeout;
    let model = state.generator(req.model.as_deref())?;
    let id = model.id.clone();
    let run = async {
        let n = choice_count(fields.n, state.options.max_choices)?;
        let mut params = sampling(model.handle.default_params(), fields, None)?;
        params.logprobs = chat_logprobs(req.logprobs, req.top_logprobs)?;
        let tools = Tools::read(req.tools, req.tool_choice, req.parallel_tool_calls)?;
        let format = response_format(req.response_format)?;
        let messages = messages(req.messages)?;
        let kwargs = template_kwargs(req.chat_template_kwargs, &tools)?;
        params.grammar = match (tools.grammar(), format) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_param(
                    "response_format",
                    "`response_format` cannot be combined with a `tool_choice` that forces a call",
                ));
            }
            (Some(g), None) => {
                check_grammar(&model.handle, &g, "tools").await?;
                Some(g)
            }
            (None, Some(g)) => {
                check_grammar(&model.handle, &g, "response_format").await?;
                Some(g)
            }
            (None, None) => None,
        };
        if params.logprobs.is_some() {
            // Builds the token table off the async threads before the answer needs it.
            let h = model.handle.clone();
            blocking(move || h.token_bytes(0).map(drop).map_err(ApiError::from)).await?;
        }
        let shape = Shape {
            chat: true,
            id: state.new_id("chatcmpl"),
            created: unix_now(),
            model: id.clone(),
            include_usage: stream_usage(req.stream_options),
            n,
            tools: tools.active().then(|| Arc::new(tools.names.clone())),
            echo: String::new(),
            handle: Some(model.handle.clone()),
        };
        let h = model.handle.clone();
        let prompt =
            blocking(move || h.prepare_chat(&messages, &kwargs).map_err(ApiError::from)).await?;
        let permit = model.admit(kv_need(model, &prompt, &params)).await?;
        // The permit covers the generation's work until it has stopped, not only its stream.
        let events: EventStream = Box::pin(
            model
                .handle
                .prepared_stream_holding(prompt, params, n, permit),
        );
        respond(
            &state,
            model,
            events,
            shape,
            req.stream.unwrap_or(false),
            deadline,
        )
        .await
    };
    run.await.map_err(|e| e.for_model(&id))
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    // Two typed views of the same bytes (serde's flatten would lose the field names of
    // errors); no untyped JSON tree is built before admission.
    let req: CompletionRequest = parse(&body)?;
    let fields: Sampling = parse(&body)?;
    let deadline = Instant::now() + state.options.request_timeout;
    let model = state.generator(req.model.as_deref())?;
    let id = model.id.clone();
    let run = async {
        let prompt = match req.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(_) => {
                return Err(ApiError::invalid_param(
                    "prompt",
                    "give exactly one prompt per request",
                ));
            }
        };
        check(
            req.suffix.as_deref().is_none_or(str::is_empty),
            "suffix",
            "`suffix` is not supported",
        )?;
        let n = choice_count(fields.n, state.options.max_choices)?;
        // OpenAI's default for completions is 16 tokens.
        let mut params = sampling(model.handle.default_params(), fields, Some(16))?;
        if let Some(k) = req.logprobs {
            let max = gllm_runtime::MAX_TOP_LOGPROBS;
            check(
                k <= max,
                "logprobs",
                format!("`logprobs` may be at most {max}, got {k}"),
            )?;
            params.logprobs = Some(k);
            let h = model.handle.clone();
            blocking(move || h.token_bytes(0).map(drop).map_err(ApiError::from)).await?;
        }
        if let Some(g) = response_format(req.response_format)? {
            check_grammar(&model.handle, &g, "response_format").await?;
            params.grammar = Some(g);
        }
        let shape = Shape {
            chat: false,
            id: state.new_id("cmpl"),
            created: unix_now(),
            model: id.clone(),
            include_usage: stream_usage(req.stream_options),
            n,
            tools: None,
            echo: if req.echo.unwrap_or(false) {
                prompt.clone()
            } else {
                String::new()
            },
            handle: Some(model.handle.clone()),
        };
        let h = model.handle.clone();
        let prompt = blocking(move || h.prepare_prompt(&prompt).map_err(ApiError::from)).await?;
        let permit = model.admit(kv_need(model, &prompt, &params)).await?;
        let events: EventStream = Box::pin(
            model
                .handle
                .prepared_stream_holding(prompt, params, n, permit),
        );
        respond(
            &state,
            model,
            events,
            shape,
            req.stream.unwrap_or(false),
            deadline,
        )
        .await
    };
    run.await.map_err(|e| e.for_model(&id))
}

/// What a generation asks of the KV budget: positions for its prompt and `max_tokens`,
/// at most the context (answers of one request share one sequence, one at a time).
fn kv_need<'a>(
    model: &'a GenModel,
    prompt: &PreparedPrompt,
    params: &SamplingParams,
) -> Option<(&'a crate::state::KvBudget, usize)> {
    let context = model.handle.active().info.max_positions;
    let tokens = prompt
        .ids
        .len()
        .saturating_add(params.max_tokens)
        .min(context.max(1));
    model.kv.as_ref().map(|b| (b, tokens))
}

fn stream_usage(o: Option<StreamOptions>) -> bool {
    o.and_then(|o| o.include_usage).unwrap_or(false)
}

/// Counts a finished request: the first answer's finish reason, every answer's tokens.
fn count(metrics: &Metrics, model: &str, gens: &[Generation]) {
    let finish = gens
        .first()
        .map_or("error", |g| finish_str(g.finish_reason));
    let u = usage(gens);
    metrics.generation(model, finish, u.prompt_tokens, u.completion_tokens);
}

/// Waits for the first event; errors before any output are HTTP errors.
async fn respond(
    state: &AppState,
    model: &GenModel,
    mut events: EventStream,
    shape: Shape,
    stream: bool,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.clone();
    let id = model.id.clone();
    let ended = || ApiError::internal("the generation ended without a result");
    let first = match events.next().await {
        Some(Ok(ev)) => ev,
        Some(Err(e)) => {
            metrics.generation(&id, "error", 0, 0);
            return Err(e.into());
        }
        None => {
            metrics.generation(&id, "error", 0, 0);
            return Err(ended());
        }
    };
    if !stream {
        let mut gens: Vec<Option<Generation>> = vec![None; shape.n];
        let mut ev = Some(first);
        loop {
            if let Some(ChoiceEvent {
                index,
                event: StreamEvent::Done(g),
            }) = ev.take()
                && let Some(slot) = gens.get_mut(index)
            {
                *slot = Some(g);
            }
            if gens.iter().all(Option::is_some) {
                break;
            }
            ev = match events.next().await {
                Some(Ok(ev)) => Some(ev),
                Some(Err(e)) => {
                    metrics.generation(&id, "error", 0, 0);
                    return Err(e.into());
                }
                None => {
                    metrics.generation(&id, "error", 0, 0);
                    return Err(ended());
                }
            };
        }
        let gens: Vec<Generation> = gens.into_iter().flatten().collect();
        count(&metrics, &id, &gens);
        return Ok(json_for(&id, shape.whole(&gens)));
    }

    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(pump(
        events,
        first,
        tx,
        shape,
        metrics,
        deadline,
        state.options.request_timeout,
    ));
    let mut response = Sse::new(ReceiverStream::new(rx)).into_response();
    // Ask reverse proxies (nginx) not to buffer the stream.
    response.headers_mut().insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    response.extensions_mut().insert(ModelLabel(id));
    Ok(response)
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

/// How sending one event to the client went.
enum Sent {
    Ok,
    /// The client went away.
    Gone,
    /// The deadline passed while the client was not reading.
    Late,
}

/// Sends `ev`, waiting for room in the client's buffer no later than `deadline`:
/// a client that stops reading cannot hold its generation past the request timeout.
async fn send_by(
    tx: &mpsc::Sender<Result<Event, Infallible>>,
    ev: Event,
    deadline: Instant,
) -> Sent {
    match tokio::time::timeout_at(deadline, tx.send(Ok(ev))).await {
        Ok(Ok(())) => Sent::Ok,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => Sent::Late,
    }
}

/// The streaming state of one answer.
struct Answer {
    started: bool,
    tools: Option<ToolCallParser>,
    calls: usize,
}

impl Shape {
    /// The events for a piece of answer `index`'s text (or, with `done`, its end).
    fn events_for(
        &self,
        a: &mut Answer,
        index: usize,
        piece: &str,
        done: Option<&Generation>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        if !a.started {
            a.started = true;
            if self.chat {
                let opening = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: Vec::new(),
                };
                out.push(self.chat_delta(index, opening));
            } else if !self.echo.is_empty() {
                out.push(self.text_delta(index, &self.echo));
            }
        }
        let outputs = match a.tools.as_mut() {
            Some(p) => {
                let mut o = p.push(piece);
                if done.is_some()
                    && let Some(p) = a.tools.take()
                {
                    o.extend(p.finish());
                }
                o
            }
            None if piece.is_empty() => Vec::new(),
            None => vec![ToolOutput::Content(piece.to_string())],
        };
        for o in outputs {
            match o {
                ToolOutput::Content(t) if t.is_empty() => {}
                ToolOutput::Content(t) if self.chat => out.push(self.chat_delta(
                    index,
                    Delta {
                        content: Some(t),
                        ..Delta::default()
                    },
                )),
                ToolOutput::Content(t) => out.push(self.text_delta(index, &t)),
                ToolOutput::Call(c) => {
                    let k = a.calls;
                    a.calls += 1;
                    let first = ToolCallDelta {
                        index: k,
                        id: Some(self.call_id(index, k)),
                        kind: Some("function"),
                        function: FunctionDelta {
                            name: Some(c.name),
                            arguments: String::new(),
                        },
                    };
                    let args = ToolCallDelta {
                        index: k,
                        id: None,
                        kind: None,
                        function: FunctionDelta {
                            name: None,
                            arguments: c.arguments,
                        },
                    };
                    for call in [first, args] {
                        out.push(self.chat_delta(
                            index,
                            Delta {
                                tool_calls: vec![call],
                                ..Delta::default()
                            },
                        ));
                    }
                }
            }
        }
        if let Some(g) = done {
            let finish = if a.calls > 0 {
                "tool_calls"
            } else {
                finish_str(g.finish_reason)
            };
            out.push(if self.chat {
                self.chunk(
                    vec![ChatChunkChoice {
                        index,
                        delta: Delta::default(),
                        logprobs: self.chat_logprobs(g),
                        finish_reason: Some(finish),
                    }],
                    None,
                )
            } else {
                self.chunk(
                    vec![TextChoice {
                        index,
                        text: String::new(),
                        logprobs: self.text_logprobs(g),
                        finish_reason: Some(finish),
                    }],
                    None,
                )
            });
        }
        out
    }
}

/// Sends the events of one stream until it ends, the client goes away, or the
/// deadline passes (also while a send waits on a client that does not read).
/// Returning drops `events`, which cancels the generation (its work holds the
/// admission permit until it has stopped).
async fn pump(
    mut events: EventStream,
    first: ChoiceEvent,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    shape: Shape,
    metrics: Arc<Metrics>,
    deadline: Instant,
    limit: Duration,
) {
    let model = shape.model.clone();
    let cancelled = |metrics: &Metrics| metrics.generation(&model, "cancelled", 0, 0);
    // The timeout's error event goes out only if there is room: the client may not be reading.
    let timed_out = |metrics: &Metrics| {
        let _ = tx.try_send(Ok(data(&ApiError::timeout(limit).body())));
        metrics.generation(&model, "timeout", 0, 0)
    };
    let mut answers: Vec<Answer> = (0..shape.n)
        .map(|_| Answer {
            started: false,
            tools: shape
                .tools
                .as_ref()
                .map(|t| ToolCallParser::new(t.to_vec())),
            calls: 0,
        })
        .collect();
    let mut done: Vec<Option<Generation>> = vec![None; shape.n];
    let mut next = Some(Ok(first));
    loop {
        let ev = match next.take() {
            Some(ev) => Some(ev),
            None => tokio::select! {
                ev = events.next() => ev,
                _ = tokio::time::sleep_until(deadline) => return timed_out(&metrics),
                _ = tx.closed() => return cancelled(&metrics),
            },
        };
        let (index, out) = match ev {
            Some(Ok(ChoiceEvent { index, event })) => {
                let Some(a) = answers.get_mut(index) else {
                    continue;
                };
                match event {
                    StreamEvent::Delta(d) => (index, shape.events_for(a, index, &d, None)),
                    StreamEvent::Done(g) => {
                        let out = shape.events_for(a, index, "", Some(&g));
                        done[index] = Some(g);
                        (index, out)
                    }
                }
            }
            Some(Err(e)) => {
                metrics.generation(&model, "error", 0, 0);
                let _ = send_by(&tx, data(&ApiError::from(e).body()), deadline).await;
                return;
            }
            None => {
                metrics.generation(&model, "error", 0, 0);
                let e = ApiError::internal("the generation ended without a result");
                let _ = send_by(&tx, data(&e.body()), deadline).await;
                return;
            }
        };
        let _ = index;
        for e in out {
            match send_by(&tx, e, deadline).await {
                Sent::Ok => {}
                Sent::Gone => return cancelled(&metrics),
                Sent::Late => return timed_out(&metrics),
            }
        }
        if done.iter().all(Option::is_some) {
            let gens: Vec<Generation> = done.into_iter().flatten().collect();
            count(&metrics, &model, &gens);
            let mut out = Vec::new();
            if shape.include_usage {
                out.push(shape.chunk(Vec::<ChatChunkChoice>::new(), Some(usage(&gens))));
            }
            out.push(Event::default().data("[DONE]"));
            for e in out {
                if !matches!(send_by(&tx, e, deadline).await, Sent::Ok) {
                    return;
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_does_not_read_is_cut_off_at_the_deadline() {
        // A generation that never ends, and a client whose buffer is full and never read.
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        let delta = || ChoiceEvent {
            index: 0,
            event: StreamEvent::Delta("x".into()),
        };
        let events: EventStream = Box::pin(futures::stream::repeat_with(move || {
            let _ = &flag;
            Ok(delta())
        }));
        let (tx, rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        let shape = Shape {
            chat: true,
            id: "chatcmpl-test".into(),
            created: 0,
            model: "m".into(),
            include_usage: false,
            n: 1,
            tools: None,
            echo: String::new(),
            handle: None,
        };
        let limit = Duration::from_millis(200);
        let pumped = pump(
            events,
            delta(),
            tx,
            shape,
            metrics.clone(),
            Instant::now() + limit,
            limit,
        );
        tokio::time::timeout(Duration::from_secs(5), pumped)
            .await
            .expect("the pump returned at the deadline");
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the generation was dropped"
        );
        assert!(
            metrics
                .render(true, &[])
                .contains("finish_reason=\"timeout\"} 1"),
            "{}",
            metrics.render(true, &[])
        );
        drop(rx);
    }

    #[test]
    fn request_overrides_defaults_and_is_checked() {
        let defaults = SamplingParams::default();
        let s: Sampling = serde_json::from_value(json!({
            "temperature": 0, "top_p": 0.5, "max_completion_tokens": 7, "max_tokens": 99,
            "stop": "END", "seed": 3, "presence_penalty": 0.5, "frequency_penalty": -0.5
        }))
        .expect("parses");
        let p = sampling(defaults.clone(), s, None).expect("valid");
        assert_eq!(p.temperature, 0.0);
        assert_eq!(p.top_p, 0.5);
        assert_eq!(p.max_tokens, 7, "max_completion_tokens wins");
        assert_eq!(p.stop, vec!["END".to_string()]);
        assert_eq!(p.seed, Some(3));
        assert_eq!(p.presence_penalty, 0.5);
        assert_eq!(p.frequency_penalty, -0.5);

        let bad: Sampling = serde_json::from_value(json!({"top_p": 0})).expect("parses");
        let e = sampling(defaults.clone(), bad, None).expect_err("top_p 0");
        assert_eq!(e.param.as_deref(), Some("top_p"));
        let bad: Sampling = serde_json::from_value(json!({"temperature": 3})).expect("parses");
        let e = sampling(defaults.clone(), bad, None).expect_err("temperature 3");
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert_eq!(choice_count(Some(3), 8).expect("n 3"), 3);
        assert_eq!(
            choice_count(Some(9), 8).expect_err("n 9").param.as_deref(),
            Some("n")
        );
        assert!(choice_count(Some(0), 8).is_err());
        assert_eq!(chat_logprobs(Some(true), Some(5)).expect("top 5"), Some(5));
        assert_eq!(chat_logprobs(Some(true), None).expect("logprobs"), Some(0));
        assert_eq!(chat_logprobs(None, None).expect("none"), None);
        let e = chat_logprobs(Some(true), Some(21)).expect_err("top 21");
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        assert!(
            chat_logprobs(None, Some(2)).is_err(),
            "top_logprobs needs logprobs"
        );
    }

    #[test]
    fn message_content_forms() {
        let m: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]))
        .expect("parses");
        let m = messages(m).expect("valid");
        assert_eq!(m[0], ChatMessage::new("system", "be brief"));
        let calls: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "2"},
        ]))
        .expect("parses");
        let calls = messages(calls).expect("valid");
        assert_eq!(
            calls[0].tool_calls,
            Some(vec![
                json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}})
            ])
        );
        assert_eq!(calls[1].tool_call_id.as_deref(), Some("c1"));
        let bad: Vec<InMessage> = serde_json::from_value(json!([
            {"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
        ]))
        .expect("parses");
        assert_eq!(
            messages(bad).expect_err("user calls").param.as_deref(),
            Some("messages[0].tool_calls")
        );
        assert_eq!(m[1], ChatMessage::new("user", "ab"));
        assert_eq!(m[2], ChatMessage::new("assistant", ""));
        let bad: Vec<InMessage> =
            serde_json::from_value(json!([{"role": "wizard", "content": "x"}])).expect("parses");
        assert_eq!(
            messages(bad).expect_err("bad role").param.as_deref(),
            Some("messages[0].role")
        );
        assert!(messages(Vec::new()).is_err());
    }
}
