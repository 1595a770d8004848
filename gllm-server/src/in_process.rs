//! The server's routes without a socket: every endpoint, middleware and limit of
//! [`crate::Server`] except the connection-level ones (the header timeout and the
//! connection cap), answering one request at a time in the caller's tokio runtime.
//! For a host program that drives gllm's API in-process (its tests, say) and for the
//! request-body fuzz target.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::http::header::CONTENT_TYPE;
use gllm_runtime::Runtime;
use hyper::service::Service;
use hyper_util::service::TowerToHyperService;

use crate::state::AppState;
use crate::{ServeOptions, ServerError, router};

/// A loaded server answering requests in-process.
pub struct InProcess {
    service: TowerToHyperService<axum::Router>,
}

/// One answer: the HTTP status and the whole body (a stream is read to its end).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The response body.
    pub body: Vec<u8>,
}

impl InProcess {
    /// Checks the options and loads every model of the manifest before returning
    /// (where [`crate::Server::run`] serves `503` while they load).
    pub async fn load(runtime: Runtime, options: ServeOptions) -> Result<Self, ServerError> {
        options.check()?;
        let state = Arc::new(AppState::new(runtime, options));
        state.load_all().await?;
        Ok(Self {
            service: TowerToHyperService::new(router::build(state)),
        })
    }

    /// Answers one request with a JSON (or empty) `body`, as a client of
    /// [`crate::Server`] would be answered.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ServerError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| ServerError::Request(format!("{method} {path}: {e}")))?;
        let response = match self.service.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| ServerError::Request(format!("{method} {path}: reading the body: {e}")))?;
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }
}
