//! Typed errors that the runtime acts on (fallback, retry, or report).

/// What kind of failure a backend reports. The runtime decides from the kind
/// alone: device kinds move to the next device, the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// The device does not exist, has no driver, or cannot be opened.
    DeviceUnavailable = 1,
    /// The device ran out of memory for this model or request.
    OutOfMemory = 2,
    /// The device stopped working (driver reset, device removed).
    DeviceLost = 3,
    /// The backend does not support this architecture, format, task or dtype.
    Unsupported = 4,
    /// The model files are wrong: missing, unexpected or mis-shaped tensor, bad config.
    InvalidModel = 5,
    /// The request is wrong: empty input, token id out of range, context overflow.
    InvalidInput = 6,
    /// Anything else: a bug or an unexpected condition inside the backend.
    Internal = 7,
}

impl ErrorKind {
    /// Converts the integer code used by the plugin C ABI back into a kind.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::DeviceUnavailable,
            2 => Self::OutOfMemory,
            3 => Self::DeviceLost,
            4 => Self::Unsupported,
            5 => Self::InvalidModel,
            6 => Self::InvalidInput,
            7 => Self::Internal,
            _ => return None,
        })
    }

    /// A short lowercase label, used in messages and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::DeviceUnavailable => "device unavailable",
            Self::OutOfMemory => "out of memory",
            Self::DeviceLost => "device lost",
            Self::Unsupported => "unsupported",
            Self::InvalidModel => "invalid model",
            Self::InvalidInput => "invalid input",
            Self::Internal => "internal error",
        }
    }
}

/// An error from a backend: a kind the runtime can act on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.label())]
pub struct BackendError {
    /// What went wrong, as the runtime needs to know it.
    pub kind: ErrorKind,
    /// What went wrong, for people: names the tensor, key, device or limit.
    pub message: String,
}

impl BackendError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// [`ErrorKind::DeviceUnavailable`].
    pub fn device_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeviceUnavailable, message)
    }
    /// [`ErrorKind::OutOfMemory`].
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfMemory, message)
    }
    /// [`ErrorKind::DeviceLost`].
    pub fn device_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeviceLost, message)
    }
    /// [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// [`ErrorKind::InvalidModel`].
    pub fn invalid_model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidModel, message)
    }
    /// [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// True for failures of the device (unavailable, out of memory, lost):
    /// the same work may succeed on another device.
    pub fn is_device_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::DeviceUnavailable | ErrorKind::OutOfMemory | ErrorKind::DeviceLost
        )
    }
}
