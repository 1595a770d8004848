//! `POST /v1/rerank` (Cohere / Jina) and `POST /rerank` (TEI).

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Document {
    Text(String),
    Object { text: String },
}

#[derive(Deserialize)]
pub(crate) struct RerankRequest {
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    pub top_n: Option<usize>,
    pub return_documents: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct TeiRerankRequest {
    pub model: Option<String>,
    pub query: String,
    pub texts: Vec<String>,
    pub raw_scores: Option<bool>,
    pub return_text: Option<bool>,
    #[allow(dead_code)]
    pub truncate: Option<bool>,
}

#[derive(Serialize)]
pub(crate) struct DocumentText {
    pub text: String,
}

#[derive(Serialize)]
pub(crate) struct RerankResult {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentText>,
}

#[derive(Serialize)]
pub(crate) struct RerankUsage {
    pub total_tokens: usize,
}

#[derive(Serialize)]
pub(crate) struct RerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    pub usage: RerankUsage,
}

/// One entry of TEI's answer.
#[derive(Serialize)]
pub(crate) struct TeiRank {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}
