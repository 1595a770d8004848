//! The crate's internal error: API errors with their kind, or candle failures
//! (which reach the runtime as internal errors, or as invalid-model errors where a
//! loader wraps them with the tensor's name).

use gllm_api::{BackendError, ErrorKind};

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

/// The kind of a candle failure: out of memory and device failures are device errors
/// (the runtime falls back to another device on them), anything else internal.
pub fn candle_kind(e: &candle_core::Error) -> ErrorKind {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("out of memory")
        || text.contains("out_of_memory")
        || text.contains("outofmemory")
    {
        return ErrorKind::OutOfMemory;
    }
    let mut inner = e;
    loop {
        match inner {
            candle_core::Error::WithBacktrace { inner: i, .. }
            | candle_core::Error::Context { inner: i, .. } => inner = i.as_ref(),
            candle_core::Error::Cuda(_) | candle_core::Error::Metal(_) => {
                return ErrorKind::DeviceLost;
            }
            candle_core::Error::NotCompiledWithCudaSupport
            | candle_core::Error::NotCompiledWithMetalSupport => {
                return ErrorKind::DeviceUnavailable;
            }
            _ => return ErrorKind::Internal,
        }
    }
}

impl From<Error> for BackendError {
    fn from(e: Error) -> Self {
        match e {
            Error::Backend(b) => b,
            Error::Candle(c) => BackendError::new(candle_kind(&c), format!("candle: {c}")),
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

/// Wraps a candle error of a load step, saying what was loaded: an invalid-model error,
/// or a device error (out of memory, a failing device) that the runtime falls back on.
pub fn model_err(what: &str) -> impl FnOnce(candle_core::Error) -> Error + '_ {
    move |e| match candle_kind(&e) {
        ErrorKind::Internal => invalid_model(format!("{what}: {e}")),
        kind => Error::Backend(BackendError::new(kind, format!("{what}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_failures_are_device_errors() {
        let oom = candle_core::Error::Cuda(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        assert_eq!(candle_kind(&oom), ErrorKind::OutOfMemory);
        let lost = candle_core::Error::Cuda("DriverError(CUDA_ERROR_LAUNCH_FAILED)".into());
        assert_eq!(candle_kind(&lost), ErrorKind::DeviceLost);
        let e = model_err("layer 3")(candle_core::Error::Cuda("out of memory".into()));
        assert!(BackendError::from(e).is_device_error());
        let shape = candle_core::Error::Msg("shape mismatch".into());
        let e = BackendError::from(model_err("layer 3")(shape));
        assert_eq!(e.kind, ErrorKind::InvalidModel);
    }
}
