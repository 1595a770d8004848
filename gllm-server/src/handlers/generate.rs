//! `POST /v1/chat/completions` and `POST /v1/completions`, with and without
//! server-sent events.
//!
//! Every generation runs as a runtime stream, also when the answer is sent whole, so
//! that a request that times out or whose client goes away drops the stream, which
//! cancels the generation and frees its KV cache. A streamed response starts once
//! the first event is there, so that errors found before any output (a bad
//! parameter, a template error, an empty prompt) are ordinary HTTP errors.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use gllm_runtime::{
    ChatMessage, FinishReason, GenerateRequest, Generation, RuntimeError, SamplingOverrides,
    SamplingParams, StreamEvent,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiJson, check, json_for, view};
use crate::error::ApiError;
use crate::metrics::{Metrics, ModelLabel};
use crate::state::{AppState, GenModel, unix_now};

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, RuntimeError>> + Send>>;

/// Most stop strings in one request.
const MAX_STOP: usize = 16;

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    include_usage: Option<bool>,
}

/// The sampling fields that chat and completions share (plus the common
/// `top_k`, `min_p` and `repetition_penalty` extensions).
#[derive(Deserialize, Default)]
pub(crate) struct Sampling {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<i64>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    stop: Option<Stop>,
    n: Option<usize>,
    logprobs: Option<Value>,
    best_of: Option<usize>,
    /// gllm's: cut an over-long prompt (keeping the system turn and the end) instead of
    /// answering 400.
    truncate_prompt: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct InMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    model: Option<String>,
    messages: Vec<InMessage>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    tools: Option<Value>,
    /// Extra chat-template variables (e.g. `{"enable_thinking": false}`), as vLLM takes them.
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub(crate) struct CompletionRequest {
    model: Option<String>,
    prompt: Prompt,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    echo: Option<bool>,
    suffix: Option<String>,
}

/// The model's defaults overridden by the request, checked.
fn sampling(
    p: SamplingParams,
    s: Sampling,
    default_max_tokens: Option<usize>,
) -> Result<SamplingParams, ApiError> {
    check(s.n.unwrap_or(1) == 1, "n", "only `n: 1` is supported")?;
    check(
        s.best_of.unwrap_or(1) == 1,
        "best_of",
        "only `best_of: 1` is supported",
    )?;
    check(
        matches!(
            s.logprobs,
            None | Some(Value::Null) | Some(Value::Bool(false))
        ),
        "logprobs",
        "`logprobs` is not supported",
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

fn messages(input: Vec<InMessage>) -> Result<Vec<ChatMessage>, ApiError> {
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
            let content = match m.content {
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
                                    format!(
                                        "only text content parts are supported, got `{}`",
                                        p.kind
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Chat or text completion: the two differ only in the JSON they send.
#[derive(Clone)]
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.prompt_tokens,
        "completion_tokens": g.token_ids.len(),
        "total_tokens": g.prompt_tokens + g.token_ids.len(),
    })
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope(&self, choices: Value, chunk: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if chunk && self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn whole(&self, text: &str, g: &Generation) -> Value {
        let choice = if self.chat {
            json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_str(g.finish_reason),
            })
        } else {
            json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_str(g.finish_reason),
            })
        };
        let mut v = self.envelope(json!([choice]), false);
        v["usage"] = usage(g);
        v
    }

    fn delta(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = if self.chat {
            let mut delta = json!({});
            if first {
                delta["role"] = json!("assistant");
            }
            if let Some(t) = text {
                delta["content"] = json!(t);
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
        };
        self.envelope(json!([choice]), true)
    }

    fn usage_chunk(&self, g: &Generation) -> Value {
        let mut v = self.envelope(json!([]), true);
        v["usage"] = usage(g);
        v
    }
}

pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = view(&body)?;
    let sampling_fields: Sampling = view(&body)?;
    let deadline = Instant::now() + state.options.request_timeout;
    let model = state.generator(req.model.as_deref())?;
    let id = model.id.clone();
    let run = async {
        if req.tools.as_ref().is_some_and(|t| !t.is_null()) {
            return Err(ApiError::invalid_param(
                "tools",
                "tool calling is not supported",
            ));
        }
        let params = sampling(model.handle.default_params(), sampling_fields, None)?;
        let messages = messages(req.messages)?;
        let shape = Shape {
            chat: true,
            id: state.new_id("chatcmpl"),
            created: unix_now(),
            model: id.clone(),
            include_usage: stream_usage(req.stream_options),
        };
        let permit = model.admit().await?;
        let kwargs = req.chat_template_kwargs.unwrap_or_default();
        // Tools and documents are request fields with checks of their own, not template variables.
        if let Some(k) = kwargs
            .keys()
            .find(|k| matches!(k.as_str(), "tools" | "documents"))
        {
            return Err(ApiError::invalid_param(
                "chat_template_kwargs",
                format!("`{k}` cannot be set through chat_template_kwargs"),
            ));
        }
        // The permit covers the generation's work until it has stopped, not only its stream.
        let events: EventStream = Box::pin(
            model
                .handle
                .chat_stream_holding(messages, kwargs, params, permit),
        );
        respond(
            &state,
            model,
            events,
            shape,
            req.stream.unwrap_or(false),
            String::new(),
            deadline,
        )
        .await
    };
    run.await.map_err(|e| e.for_model(&id))
}

pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = view(&body)?;
    let sampling_fields: Sampling = view(&body)?;
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
        // OpenAI's default for completions is 16 tokens.
        let params = sampling(model.handle.default_params(), sampling_fields, Some(16))?;
        let shape = Shape {
            chat: false,
            id: state.new_id("cmpl"),
            created: unix_now(),
            model: id.clone(),
            include_usage: stream_usage(req.stream_options),
        };
        let echo = if req.echo.unwrap_or(false) {
            prompt.clone()
        } else {
            String::new()
        };
        let permit = model.admit().await?;
        let events: EventStream = Box::pin(
            model
                .handle
                .generate_stream_holding(GenerateRequest { prompt, params }, permit),
        );
        respond(
            &state,
            model,
            events,
            shape,
            req.stream.unwrap_or(false),
            echo,
            deadline,
        )
        .await
    };
    run.await.map_err(|e| e.for_model(&id))
}

fn stream_usage(o: Option<StreamOptions>) -> bool {
    o.and_then(|o| o.include_usage).unwrap_or(false)
}

/// Waits for the first event; errors before any output are HTTP errors.
#[allow(clippy::too_many_arguments)]
async fn respond(
    state: &AppState,
    model: &GenModel,
    mut events: EventStream,
    shape: Shape,
    stream: bool,
    echo: String,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.clone();
    let id = model.id.clone();
    let first = match events.next().await {
        Some(Ok(ev)) => ev,
        Some(Err(e)) => {
            metrics.generation(&id, "error", 0, 0);
            return Err(e.into());
        }
        None => {
            metrics.generation(&id, "error", 0, 0);
            return Err(ApiError::internal("the generation ended without a result"));
        }
    };
    if !stream {
        let mut ev = first;
        let g = loop {
            match ev {
                StreamEvent::Done(g) => break g,
                StreamEvent::Delta(_) => {}
            }
            ev = match events.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    metrics.generation(&id, "error", 0, 0);
                    return Err(e.into());
                }
                None => {
                    metrics.generation(&id, "error", 0, 0);
                    return Err(ApiError::internal("the generation ended without a result"));
                }
            };
        };
        metrics.generation(
            &id,
            finish_str(g.finish_reason),
            g.prompt_tokens,
            g.token_ids.len(),
        );
        let text = format!("{echo}{}", g.text);
        return Ok(json_for(&id, shape.whole(&text, &g)));
    }

    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(pump(
        events,
        first,
        tx,
        shape,
        echo,
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

/// Sends the events of one stream until it ends, the client goes away, or the
/// deadline passes (also while a send waits on a client that does not read).
/// Returning drops `events`, which cancels the generation (its work holds the
/// admission permit until it has stopped).
#[allow(clippy::too_many_arguments)]
async fn pump(
    mut events: EventStream,
    first: StreamEvent,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    shape: Shape,
    echo: String,
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
    let opening = if shape.chat {
        Some(shape.delta(Some(""), true, None))
    } else if !echo.is_empty() {
        Some(shape.delta(Some(&echo), true, None))
    } else {
        None
    };
    if let Some(v) = opening {
        match send_by(&tx, data(&v), deadline).await {
            Sent::Ok => {}
            Sent::Gone => return cancelled(&metrics),
            Sent::Late => return timed_out(&metrics),
        }
    }
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
        match ev {
            Some(Ok(StreamEvent::Delta(d))) => {
                match send_by(&tx, data(&shape.delta(Some(&d), false, None)), deadline).await {
                    Sent::Ok => {}
                    Sent::Gone => return cancelled(&metrics),
                    Sent::Late => return timed_out(&metrics),
                }
            }
            Some(Ok(StreamEvent::Done(g))) => {
                let finish = finish_str(g.finish_reason);
                metrics.generation(&model, finish, g.prompt_tokens, g.token_ids.len());
                let mut out = vec![data(&shape.delta(None, false, Some(finish)))];
                if shape.include_usage {
                    out.push(data(&shape.usage_chunk(&g)));
                }
                out.push(Event::default().data("[DONE]"));
                for e in out {
                    if !matches!(send_by(&tx, e, deadline).await, Sent::Ok) {
                        return;
                    }
                }
                return;
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
        let events: EventStream = Box::pin(futures::stream::repeat_with(move || {
            let _ = &flag;
            Ok(StreamEvent::Delta("x".into()))
        }));
        let (tx, rx) = mpsc::channel(1);
        let metrics = Arc::new(Metrics::default());
        let shape = Shape {
            chat: true,
            id: "chatcmpl-test".into(),
            created: 0,
            model: "m".into(),
            include_usage: false,
        };
        let limit = Duration::from_millis(200);
        let pumped = pump(
            events,
            StreamEvent::Delta("x".into()),
            tx,
            shape,
            String::new(),
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
        let bad: Sampling = serde_json::from_value(json!({"n": 2})).expect("parses");
        assert!(sampling(defaults, bad, None).is_err());
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
