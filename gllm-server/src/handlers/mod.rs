//! Request handlers, one file per family of endpoints, and what they share: a JSON
//! body extractor whose every failure is an OpenAI-shaped 400/413, and responses
//! labelled with their model for the metrics.

pub(crate) mod embed;
pub(crate) mod generate;
pub(crate) mod info;
pub(crate) mod rerank;
pub(crate) mod tokenize;
pub(crate) mod tools;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::metrics::ModelLabel;

/// A JSON body. Malformed JSON and wrong types are 400 naming the field; a body over
/// the limit is 413. The content type is not checked (curl's `-d` sends a form type).
pub(crate) struct ApiJson<T>(pub T);

/// A request body read whole (limit and emptiness checked), for handlers that read
/// several typed views of it with [`parse`]: no untyped JSON tree is ever built.
pub(crate) struct RawJson(pub Bytes);

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(0);
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(format!("cannot read the request body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty: send a JSON object",
        ));
    }
    Ok(bytes)
}

/// Reads a typed view of a JSON body.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(deserialize_error)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse(&read_body(req, state).await?).map(ApiJson)
    }
}

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(RawJson)
    }
}

/// A 400 for a body that does not parse, naming the field when there is one.
fn deserialize_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let syntax = inner.is_syntax() || inner.is_eof();
    let msg = if syntax {
        format!("malformed JSON in the request body: {inner}")
    } else if path == "." {
        format!("invalid request body: {inner}")
    } else {
        format!("invalid value for `{path}`: {inner}")
    };
    let err = ApiError::invalid(msg);
    if path == "." || syntax {
        err
    } else {
        err.with_param(&path)
    }
}

/// The body limit in force, for the 413 message (set by the router).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A JSON response labelled with its model.
pub(crate) fn json_for(model: &str, body: impl serde::Serialize) -> Response {
    let mut r = axum::Json(body).into_response();
    r.extensions_mut().insert(ModelLabel(model.to_string()));
    r
}

/// Runs tokenization or other CPU work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// Rejects an optional numeric parameter with a message naming it.
pub(crate) fn check(ok: bool, param: &str, message: impl Into<String>) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(param, message))
    }
}
