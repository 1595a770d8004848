//! Errors: [`ApiError`] is what a client sees, always in OpenAI's JSON error shape
//! `{"error": {"message", "type", "param", "code"}}` with a fitting HTTP status;
//! [`ServerError`] is what [`crate::serve`] itself can fail with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gllm_runtime::RuntimeError;
use gllm_runtime::api::ErrorKind;

use crate::metrics::ModelLabel;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be opened or served.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Serving connections failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// A model of the manifest could not be loaded at startup.
    #[error("model `{id}` failed to load: {source}")]
    Load {
        /// The model id.
        id: String,
        /// The runtime's error.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The options are inconsistent (a zero queue, a zero budget, ...).
    #[error("invalid server option: {0}")]
    Options(String),
    /// An in-process request ([`crate::InProcess::request`]) could not be built or read.
    #[error("in-process request: {0}")]
    Request(String),
}

/// An error answer: status, OpenAI error type, message, the offending parameter and a code.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `rate_limit_error`, ...).
    pub kind: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, if known.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `queue_full`, ...).
    pub code: Option<&'static str>,
    /// The model the request was for (a metrics label), when known.
    pub model: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            model: None,
        }
    }

    /// 400: the request is malformed or invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message.into(),
        )
    }

    /// 400 naming the parameter at fault.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(message).with_param(param)
    }

    /// 404: no such model.
    pub fn model_not_found(id: &str, known: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{id}` does not exist (this server has: {known})"),
        )
        .with_param("model");
        e.code = Some("model_not_found");
        e
    }

    /// 404: no such route.
    pub fn route_not_found(path: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown endpoint `{path}`"),
        );
        e.code = Some("unknown_url");
        e
    }

    /// 405: the route exists with another method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed for this endpoint",
        )
    }

    /// 401: no or the wrong API key.
    pub fn unauthorized() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect or missing API key: send `Authorization: Bearer <key>`",
        );
        e.code = Some("invalid_api_key");
        e
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body too large: the limit is {limit} bytes"),
        );
        e.code = Some("body_too_large");
        e
    }

    /// 429: the model's queue is full.
    pub fn queue_full(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("The queue of model `{model}` is full; retry later"),
        );
        e.code = Some("queue_full");
        e.model = Some(model.to_string());
        e
    }

    /// 429: the KV cache memory budget has no room for this generation now.
    pub fn kv_full(model: &str, need_mib: f64, budget_mib: f64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "The server's KV cache budget ({budget_mib:.1} MiB) has no room for this generation \
                 ({need_mib:.1} MiB for its prompt and max_tokens) until others finish; retry later"
            ),
        );
        e.code = Some("kv_budget_full");
        e.model = Some(model.to_string());
        e
    }

    /// 503: models are still loading.
    pub fn loading() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable_error",
            "Models are still loading; retry when /health answers 200",
        );
        e.code = Some("model_loading");
        e
    }

    /// 503: the server is going away or a worker is gone.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable_error",
            message,
        )
    }

    /// 504: the request ran past the server's time limit.
    pub fn timeout(limit: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            format!(
                "The request took longer than the server's limit of {:.1} s",
                limit.as_secs_f64()
            ),
        );
        e.code = Some("timeout");
        e
    }

    /// 500: a bug or an unexpected condition.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    /// Labels the error with the model it concerns (for metrics).
    pub fn for_model(mut self, model: &str) -> Self {
        self.model = Some(model.to_string());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let message = e.to_string();
        match &e {
            RuntimeError::UnknownModel { id, known } => Self::model_not_found(id, known),
            RuntimeError::WrongTask { .. } => {
                let mut a = Self::invalid_param("model", message);
                a.code = Some("wrong_task");
                a
            }
            RuntimeError::InvalidRequest(_)
            | RuntimeError::Tokenizer(_)
            | RuntimeError::Template(_) => Self::invalid(message),
            RuntimeError::Backend { source, .. } => match source.kind {
                ErrorKind::InvalidInput => Self::invalid(message),
                ErrorKind::OutOfMemory | ErrorKind::DeviceLost | ErrorKind::DeviceUnavailable => {
                    Self::unavailable(message)
                }
                _ => Self::internal(message),
            },
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(model) = self.model {
            response.extensions_mut().insert(ModelLabel(model));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ApiError::invalid_param("input", "input must not be empty");
        let body = e.body();
        assert_eq!(body["error"]["message"], "input must not be empty");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "input");
        assert!(body["error"]["code"].is_null());
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn runtime_errors_map_to_statuses() {
        let unknown = RuntimeError::UnknownModel {
            id: "x".into(),
            known: "a, b".into(),
        };
        assert_eq!(ApiError::from(unknown).status, StatusCode::NOT_FOUND);
        let bad = RuntimeError::InvalidRequest("empty prompt".into());
        assert_eq!(ApiError::from(bad).status, StatusCode::BAD_REQUEST);
        let oom = RuntimeError::Backend {
            id: "m".into(),
            backend: "b".into(),
            device: "cpu".into(),
            source: gllm_runtime::api::BackendError::out_of_memory("full"),
        };
        assert_eq!(ApiError::from(oom).status, StatusCode::SERVICE_UNAVAILABLE);
        let input = RuntimeError::Backend {
            id: "m".into(),
            backend: "b".into(),
            device: "cpu".into(),
            source: gllm_runtime::api::BackendError::new(ErrorKind::InvalidInput, "id"),
        };
        assert_eq!(ApiError::from(input).status, StatusCode::BAD_REQUEST);
    }
}
