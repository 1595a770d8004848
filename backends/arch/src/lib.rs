//! # gllm-arch: what a decoder is, independent of the engine that runs it
//!
//! The Candle and Burn decoders of gllm both build from this crate:
//! - [`Architecture`]: the architectures understood (Qwen2, Qwen3, Llama) and what
//!   sets them apart (qkv bias, per-head q/k RMSNorm, RoPE pairing);
//! - [`DecoderConfig`]: the hyper-parameters, read from a Hugging Face
//!   `config.json` ([`DecoderConfig::from_hf_json`]) or from GGUF metadata
//!   ([`DecoderConfig::from_gguf`]), checked by one [`DecoderConfig::validate`];
//! - [`schema`]: every tensor a config requires, with its shape and its names in
//!   both file formats, and the strict check that a checkpoint holds exactly those.
//!
//! - [`checkpoint`]: the files of a checkpoint directory (the shards of a
//!   `model.safetensors.index.json`, checked to stay in the directory).
//!
//! It knows nothing of tensors' values: engines read those themselves.
#![warn(missing_docs)]

mod architecture;
pub mod checkpoint;
mod config;
mod gguf_config;
mod hf_config;
pub mod schema;

pub use architecture::{Architecture, RopeStyle};
pub use config::DecoderConfig;
pub use gguf_config::GgufMetadata;
pub use schema::{HfNaming, LayerPart, Part};
