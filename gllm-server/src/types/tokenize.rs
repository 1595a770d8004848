//! `POST /tokenize` and `POST /detokenize`, in the shapes of vLLM (`prompt` or
//! `messages`, `add_special_tokens`; answers `tokens`, `count`, `max_model_len`) and of
//! llama-server (`content`, `add_special`; answers `tokens`; `/detokenize` answers
//! `content`). Both clients' field names are read and written.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::completions::InMessage;

#[derive(Deserialize)]
pub(crate) struct TokenizeRequest {
    pub model: Option<String>,
    /// vLLM's name for the text.
    pub prompt: Option<String>,
    /// llama-server's name for the text.
    pub content: Option<String>,
    /// A conversation, rendered with the model's chat template.
    pub messages: Option<Vec<InMessage>>,
    /// For `messages`: open the assistant's turn (default true).
    pub add_generation_prompt: Option<bool>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    pub tools: Option<Vec<Value>>,
    /// vLLM's: the tokenizer's special tokens (BOS) around a text (default true).
    pub add_special_tokens: Option<bool>,
    /// llama-server's name for the same.
    pub add_special: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct TokenizeResponse {
    pub tokens: Vec<u32>,
    pub count: usize,
    pub max_model_len: usize,
}

#[derive(Deserialize)]
pub(crate) struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Serialize)]
pub(crate) struct DetokenizeResponse {
    /// vLLM's field.
    pub prompt: String,
    /// llama-server's field.
    pub content: String,
}
