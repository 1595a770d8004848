//! The crate's internal error: API errors with their kind, or candle failures
//! (which reach the runtime as internal errors, or as invalid-model errors where a
//! loader wraps them with the tensor's name).

use gllm_api::BackendError;

/// An error inside this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error whose kind is already decided.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A candle operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for BackendError {
    fn from(e: Error) -> Self {
        match e {
            Error::Backend(b) => b,
            Error::Candle(c) => BackendError::internal(c.to_string()),
        }
    }
}

/// An internal error.
pub fn internal(msg: impl Into<String>) -> Error {
    Error::Backend(BackendError::internal(msg))
}

/// An invalid-model error.
pub fn invalid_model(msg: impl Into<String>) -> Error {
    Error::Backend(BackendError::invalid_model(msg))
}

/// An invalid-input error.
pub fn invalid_input(msg: impl Into<String>) -> Error {
    Error::Backend(BackendError::invalid_input(msg))
}

/// Wraps a candle error of a load step as an invalid-model error saying what was loaded.
pub fn model_err(what: &str) -> impl FnOnce(candle_core::Error) -> Error + '_ {
    move |e| invalid_model(format!("{what}: {e}"))
}
