//! `POST /v1/embeddings` (OpenAI) and `POST /embed` (TEI).

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum EmbedInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
pub(crate) struct EmbeddingsRequest {
    pub model: Option<String>,
    pub input: EmbedInput,
    pub encoding_format: Option<String>,
    pub dimensions: Option<usize>,
    /// One of the model's prompts (sentence-transformers' `prompt_name`), prepended to each text.
    pub prompt_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum TeiInputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub(crate) struct TeiEmbedRequest {
    pub model: Option<String>,
    pub inputs: TeiInputs,
    pub normalize: Option<bool>,
    #[allow(dead_code)]
    pub truncate: Option<bool>,
    pub dimensions: Option<usize>,
    pub prompt_name: Option<String>,
}

/// One embedding row: floats, or base64 of little-endian f32 (`encoding_format: base64`).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum EmbeddingValue {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
pub(crate) struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Serialize)]
pub(crate) struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Serialize)]
pub(crate) struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}
