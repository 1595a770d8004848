//! Request and response bodies as serde types, one module per API surface (OpenAI's
//! chat and text completions and embeddings, Cohere's and TEI's rerank, TEI's embed,
//! llama-server's and vLLM's tokenize endpoints, the model list and health). The
//! handlers read and write these, never untyped JSON.

pub(crate) mod completions;
pub(crate) mod embeddings;
pub(crate) mod models;
pub(crate) mod rerank;
pub(crate) mod tokenize;
