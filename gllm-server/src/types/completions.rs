//! `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's request and
//! response shapes (streamed chunks included), with the common extensions (`top_k`,
//! `min_p`, `repetition_penalty`, `chat_template_kwargs`) and gllm's `truncate_prompt`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The sampling fields that chat and completions share, read from the same body as
/// the request itself (a second typed view, not `serde(flatten)`, which would lose
/// the field names of errors).
#[derive(Deserialize, Default)]
pub(crate) struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub stop: Option<Stop>,
    /// Answers to generate from one prompt.
    pub n: Option<usize>,
    pub best_of: Option<usize>,
    /// gllm's: cut an over-long prompt (keeping the system turn and the end) instead of
    /// answering 400.
    pub truncate_prompt: Option<bool>,
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
    pub kind: String,
    pub text: Option<String>,
}

/// A tool call in an assistant message of the conversation.
#[derive(Deserialize)]
pub(crate) struct InToolCall {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: InFunctionCall,
}

#[derive(Deserialize)]
pub(crate) struct InFunctionCall {
    pub name: String,
    /// A JSON string (as OpenAI sends it) or an object.
    pub arguments: Value,
}

#[derive(Deserialize)]
pub(crate) struct InMessage {
    pub role: String,
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<InToolCall>>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Tool definitions, checked entry by entry (the errors name the field).
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    /// Extra chat-template variables (e.g. `{"enable_thinking": false}`), as vLLM takes them.
    pub chat_template_kwargs: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub(crate) struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    /// Alternatives per token to report (the legacy completions field is a number).
    pub logprobs: Option<usize>,
    pub response_format: Option<Value>,
}

/// Token counts of a response.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Serialize, Clone, Copy)]
pub(crate) struct PromptTokensDetails {
    /// Prompt tokens whose KV cache was reused rather than prefilled.
    pub cached_tokens: usize,
}

/// One alternative of a token's logprobs entry.
#[derive(Serialize, Clone)]
pub(crate) struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// A generated token's log-probability, with the most likely alternatives.
#[derive(Serialize, Clone)]
pub(crate) struct LogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize, Clone)]
pub(crate) struct ChoiceLogprobs {
    pub content: Vec<LogprobEntry>,
}

/// The legacy completions logprobs shape.
#[derive(Serialize, Clone)]
pub(crate) struct TextLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

#[derive(Serialize, Clone)]
pub(crate) struct FunctionCall {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

#[derive(Serialize, Clone)]
pub(crate) struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Serialize)]
pub(crate) struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

#[derive(Serialize)]
pub(crate) struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: &'static str,
}

#[derive(Serialize)]
pub(crate) struct TextChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<TextLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// A whole response (`chat.completion` or `text_completion`).
#[derive(Serialize)]
pub(crate) struct Completion<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<C>,
    pub usage: Usage,
}

#[derive(Serialize, Clone)]
pub(crate) struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// A piece of a streamed tool call: the first carries its id and name.
#[derive(Serialize, Clone)]
pub(crate) struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Serialize, Default)]
pub(crate) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

#[derive(Serialize)]
pub(crate) struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// A streamed event (`chat.completion.chunk`, or `text_completion` for completions).
/// `usage` is `null` on every chunk when the client asked for usage, and set on the
/// last one (whose `choices` is empty); absent otherwise.
#[derive(Serialize)]
pub(crate) struct Chunk<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}
