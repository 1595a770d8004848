//! # gllm-runtime
//!
//! Reads the model manifest (`models.toml`), picks a backend and a device per
//! model (GPU first, CPU as fallback, also in the middle of a request), and owns
//! everything that deals with text: tokenization, chat templates, sampling, stop
//! handling and streaming. Backends only ever see token ids.
//!
//! Entry point: [`Runtime::from_manifest_file`], then [`Runtime::embedder`],
//! [`Runtime::reranker`] or [`Runtime::generator`] for async handles.
#![warn(missing_docs)]

pub mod chat_template;
pub mod decoder_rerank;
mod error;
mod generate;
pub mod gguf_meta;
mod handles;
pub mod hub;
pub mod load_progress;
pub mod manifest;
pub mod model_files;
pub mod model_location;
pub mod plugin_host;
pub mod registry;
mod runtime;
pub mod sampling;
mod served;
pub mod stream;
pub mod tokenizer;

pub use error::{Result, RuntimeError};
pub use generate::PREFILL_CHUNK;
pub use handles::{
    ChatMessage, ChatSession, EmbedderHandle, Embedding, FinishReason, GenerateBench,
    GenerateRequest, Generation, GeneratorHandle, RerankResult, RerankerHandle, StreamEvent,
    TemplateKwargs,
};
pub use model_files::Activation;
pub use runtime::{CandidateReport, ModelPlan, Runtime};
pub use sampling::{SamplingOverrides, SamplingParams};
pub use served::{ActiveBackend, Attempt};

pub use gllm_api as api;
