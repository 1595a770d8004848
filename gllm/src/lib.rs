//! # gllm
//!
//! Local text embeddings, reranking and text generation in pure Rust, with
//! BERT-family encoders and Qwen2/Qwen3/Llama decoders from safetensors or GGUF.
//!
//! Open a model by where it is (a model directory, a `.gguf` file, or
//! `hf:org/name[:file.gguf]`) in one call:
//!
//! ```no_run
//! # async fn demo() -> gllm::Result<()> {
//! let embedder = gllm::Embedder::open("all-MiniLM-L6-v2").await?;
//! let rows = embedder.embed(vec!["hello world".into()]).await?;
//!
//! let generator = gllm::Generator::open("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").await?;
//! let mut params = generator.default_params();
//! params.temperature = 0.0;
//! let answer = generator
//!     .chat(vec![gllm::ChatMessage::new("user", "Write hello world in Rust.")], params)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [`Options`] chooses the device, backend and dtype
//! (`gllm::Options::new().cpu().generator(path)`); a registry of models is a manifest
//! file read by [`open_manifest`] (see the repository's README for its format).
//!
//! This crate owns the built-in backends (features `burn-bert`, `candle-qwen2`,
//! `burn-qwen2`, all on by default): the runtime links none itself. A program that
//! builds a [`Runtime`] directly calls [`link_builtin_backends`] first. The handles are cheap to clone and usable from many tasks; model work runs
//! on tokio's blocking threads, so the `open` and request methods need a tokio runtime.

#![warn(missing_docs)]

mod backends;

use std::ops::Deref;
use std::path::Path;

pub use gllm_api::{DType, Device, Task};
/// Progress of model loads (bytes of weights read), for a progress bar.
pub use gllm_runtime::load_progress;
pub use gllm_runtime::{
    ChatMessage, EmbedderHandle, Embedding, FinishReason, GenerateRequest, Generation,
    GeneratorHandle, RerankResult, RerankerHandle, Runtime, RuntimeError as Error, SamplingParams,
    StreamEvent,
};

pub use backends::{builtin_backend_names, link_builtin_backends};

use gllm_runtime::manifest::Manifest;
use gllm_runtime::registry::Registry;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A runtime over the manifest file at `path`, with the built-in backends and the
/// plugins the manifest and `GLLM_PLUGIN_PATH` name.
pub fn open_manifest(path: impl AsRef<Path>) -> Result<Runtime> {
    link_builtin_backends();
    Runtime::from_manifest_file(path.as_ref())
}

/// How to open a model: devices in preference order, backends, dtype, input cap.
/// Anything left unset takes the built-in default (a GPU first, then the CPU; every
/// backend that can load the model; the model's own dtype and length limit).
#[derive(Debug, Clone, Default)]
pub struct Options {
    devices: Vec<Device>,
    backends: Vec<String>,
    dtype: Option<DType>,
    max_length: Option<usize>,
}

impl Options {
    /// The built-in defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tries `device` after the devices named before it.
    pub fn device(mut self, device: Device) -> Self {
        if !self.devices.contains(&device) {
            self.devices.push(device);
        }
        self
    }

    /// The CPU only (or after the devices named before).
    pub fn cpu(self) -> Self {
        self.device(Device::CPU)
    }

    /// Tries backend `name` (e.g. `"candle-qwen2"`) after those named before it.
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backends.push(name.into());
        self
    }

    /// Asks the backend to compute in `dtype`.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Truncates inputs to `tokens` tokens.
    pub fn max_length(mut self, tokens: usize) -> Self {
        self.max_length = Some(tokens);
        self
    }

    /// Opens the embedding model at `location`.
    pub async fn embedder(&self, location: impl AsRef<Path>) -> Result<Embedder> {
        let (runtime, id) = self.runtime(location.as_ref(), Task::Embed)?;
        Ok(Embedder(runtime.embedder(&id).await?))
    }

    /// Opens the reranking (cross-encoder) model at `location`.
    pub async fn reranker(&self, location: impl AsRef<Path>) -> Result<Reranker> {
        let (runtime, id) = self.runtime(location.as_ref(), Task::Rerank)?;
        Ok(Reranker(runtime.reranker(&id).await?))
    }

    /// Opens the text-generation model at `location`.
    pub async fn generator(&self, location: impl AsRef<Path>) -> Result<Generator> {
        let (runtime, id) = self.runtime(location.as_ref(), Task::Generate)?;
        Ok(Generator(runtime.generator(&id).await?))
    }

    /// A runtime holding the one model at `location`, with these options applied.
    fn runtime(&self, location: &Path, task: Task) -> Result<(Runtime, String)> {
        let spec = location.to_str().ok_or_else(|| Error::ModelLocation {
            location: location.display().to_string(),
            message: "the path is not valid UTF-8".into(),
        })?;
        link_builtin_backends();
        let registry = Registry::builtin();
        gllm_runtime::manifest::check_backends(&self.backends, &registry.names())
            .map_err(Error::Manifest)?;
        let mut manifest = Manifest::empty();
        let id = manifest.add_location(spec, Some(task))?;
        if let Some(entry) = manifest.models.iter_mut().find(|m| m.id == id) {
            if !self.devices.is_empty() {
                entry.devices = self.devices.clone();
            }
            if !self.backends.is_empty() {
                entry.backends = self.backends.clone();
            }
            entry.dtype = self.dtype.or(entry.dtype);
            entry.max_length = self.max_length.or(entry.max_length);
        }
        Ok((Runtime::new(manifest, registry), id))
    }
}

macro_rules! handle {
    ($name:ident, $handle:ty, $open:ident, $what:literal) => {
        #[doc = concat!("An open ", $what, " model: the methods of [`", stringify!($handle), "`].")]
        #[derive(Clone)]
        pub struct $name($handle);

        impl $name {
            #[doc = concat!("Opens the ", $what, " model at `location` (a model directory, a `.gguf` file or `hf:org/name[:file.gguf]`) with the built-in defaults.")]
            pub async fn open(location: impl AsRef<Path>) -> Result<Self> {
                Options::new().$open(location).await
            }

            /// The runtime's handle.
            pub fn handle(&self) -> &$handle {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = $handle;
            fn deref(&self) -> &$handle {
                &self.0
            }
        }
    };
}

handle!(Embedder, EmbedderHandle, embedder, "embedding");
handle!(Reranker, RerankerHandle, reranker, "reranking");
handle!(Generator, GeneratorHandle, generator, "text-generation");
