//! The runtime's error type.

use gllm_api::BackendError;

/// Everything the runtime can fail with. Messages name the model id, key, file or device.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The manifest is malformed or inconsistent.
    #[error("{0}")]
    Manifest(String),
    /// No model with this id in the manifest.
    #[error("unknown model `{id}` (the manifest has: {known})")]
    UnknownModel {
        /// The id asked for.
        id: String,
        /// The ids the manifest has, comma-separated.
        known: String,
    },
    /// The model exists but serves another task.
    #[error("model `{id}` is a `{actual}` model; it cannot {wanted}")]
    WrongTask {
        /// The model id.
        id: String,
        /// Its task.
        actual: gllm_api::Task,
        /// What was asked of it.
        wanted: &'static str,
    },
    /// Files next to the weights (tokenizer, config, template) are missing or wrong.
    #[error("model `{id}`: {message}")]
    ModelFiles {
        /// The model id.
        id: String,
        /// What is wrong, naming the file.
        message: String,
    },
    /// No candidate (backend, device) could load the model; lists why each was skipped.
    #[error("model `{id}`: no backend could load it:\n{reasons}")]
    NoCandidate {
        /// The model id.
        id: String,
        /// One line per candidate tried or skipped.
        reasons: String,
    },
    /// A backend failed for this model.
    #[error("model `{id}` on {backend}/{device}: {source}")]
    Backend {
        /// The model id.
        id: String,
        /// The backend's name.
        backend: String,
        /// The device in use.
        device: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The request itself is invalid (empty prompt, bad sampling parameter, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Tokenization or detokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// A plugin library could not be used.
    #[error("plugin {library}: {message}")]
    Plugin {
        /// The library path.
        library: String,
        /// What is wrong with it.
        message: String,
    },
    /// A model named by location (a path or `hf:` id) that is not one gllm can open.
    #[error("{location}: {message}")]
    ModelLocation {
        /// The location as given.
        location: String,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// An internal failure (a worker thread died, a channel closed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// The backend error behind this one, if any.
    pub fn backend_error(&self) -> Option<&BackendError> {
        match self {
            Self::Backend { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand for results of the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
