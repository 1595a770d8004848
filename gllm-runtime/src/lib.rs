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
pub mod grammar;
mod handles;
pub mod hub;
pub mod load_progress;
pub mod manifest;
pub mod model_files;
pub mod model_location;
pub mod plugin_host;
mod prompt_cache;
pub mod registry;
mod runtime;
pub mod sampling;
mod served;
pub mod stream;
pub mod tokenizer;
pub mod tool_calls;

pub use error::{Result, RuntimeError};
pub use generate::PREFILL_CHUNK;
pub use grammar::Grammar;
pub use handles::{
    ChatMessage, ChatSession, ChoiceEvent, EmbedderHandle, Embedding, FinishReason, GenerateBench,
    GenerateRequest, Generation, GeneratorHandle, PreparedPrompt, RerankResult, RerankerHandle,
    StreamEvent, TemplateKwargs,
};
pub use model_files::Activation;
pub use prompt_cache::PromptCacheStats;
pub use runtime::{CandidateReport, ModelPlan, Runtime};
pub use sampling::{MAX_TOP_LOGPROBS, SamplingOverrides, SamplingParams, TokenLogprob};
pub use served::{ActiveBackend, Attempt};
pub use tool_calls::{ToolCall, ToolCallParser, ToolOutput, parse_tool_calls, tool_call_grammar};

pub use gllm_api as api;
