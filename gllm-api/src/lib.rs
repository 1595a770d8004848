//! # gllm-api: the stable backend contract of gllm
//!
//! A backend turns **token ids** into numbers: pooled embeddings, cross-encoder
//! logits, or next-token logits through KV-cache handles. Everything that deals
//! with text (tokenization, chat templates, sampling, stop strings) lives in
//! `gllm-runtime`, so every backend produces the same text for the same logits.
//!
//! A backend crate:
//! 1. implements [`InferenceBackend`] for a loaded model,
//! 2. implements [`BackendFactory`] (name, capabilities, `load`),
//! 3. registers the factory with `inventory::submit!` as a [`Registration`]:
//!
//! ```text
//! static FACTORY: MyFactory = MyFactory;
//! gllm_api::inventory::submit! { gllm_api::Registration::new(&FACTORY) }
//! ```
//!
//! Backends shipped as shared libraries export the same factory through the C
//! ABI of [`plugin`] instead (`gllm_api::export_plugin!(FACTORY)`).
#![warn(missing_docs)]

mod backend;
mod error;
mod factory;
pub mod plugin;
mod progress;
mod spec;

pub use backend::{EncodedInput, InferenceBackend, KvCache, ModelInfo, downcast_cache};
pub use error::{BackendError, ErrorKind};
pub use factory::{BackendFactory, Capabilities, Registration, registered_factories};
pub use progress::LoadProgress;
pub use spec::{DType, Device, DeviceKind, ModelSpec, Task, WeightFormat};

/// Re-exported so that backend crates register with the same `inventory` version.
pub use inventory;

/// Version of this API: `(major, minor)`. A backend compiled against another
/// major version is refused; a plugin's minor must be at least the host's.
pub const API_VERSION: (u32, u32) = (1, 0);
