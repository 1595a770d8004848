//! Routes and the middleware around them: metrics (outermost, so it sees every
//! status), the API key check, the body limit and the request timeout.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::error::ApiError;
use crate::handlers::{BodyLimit, embed, generate, info, rerank, tokenize};
use crate::metrics::ModelLabel;
use crate::state::AppState;

/// Every route of the server.
pub(crate) fn build(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .route("/v1/models", get(info::models))
        .route("/v1/models/{id}", get(info::model))
        .route("/v1/embeddings", post(embed::openai))
        .route("/embed", post(embed::tei))
        .route("/v1/rerank", post(rerank::openai))
        .route("/rerank", post(rerank::tei))
        .route("/v1/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(state.options.body_limit))
        .layer(Extension(BodyLimit(state.options.body_limit)))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::route_not_found(req.uri().path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Counts the request in flight until it is answered or dropped.
struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.request_done();
    }
}

/// Request counts and latencies per endpoint, model and status.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    state.metrics.request_started();
    let _guard = InFlight(state.clone());
    let response = next.run(req).await;
    let model = response
        .extensions()
        .get::<ModelLabel>()
        .map(|m| m.0.as_str())
        .unwrap_or("");
    state.metrics.request_finished(
        &endpoint,
        model,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With an API key set, everything but `/health` needs `Authorization: Bearer <key>`.
/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 7235), as clients send `bearer` too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key
        && req.uri().path() != "/health"
    {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// 504 when a response has not started within the limit (streams carry the same
/// deadline themselves). Dropping the handler cancels its work: a queued batch job
/// is skipped, a generation stops.
async fn timeout(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limit = state.options.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::timeout(limit).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer sekret"), Some("sekret"));
        assert_eq!(bearer_token("bearer sekret"), Some("sekret"));
        assert_eq!(bearer_token("BEARER  sekret "), Some("sekret"));
        assert_eq!(bearer_token("Basic c2VrcmV0"), None);
        assert_eq!(bearer_token("sekret"), None);
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// Before the models are loaded: /health and model endpoints answer 503, the
    /// API key still applies, /metrics says not ready.
    #[tokio::test]
    async fn answers_503_while_loading() {
        let fixtures = gllm_testkit::fixture("tiny-bert");
        let dir = std::env::temp_dir().join(format!("gllm-server-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let manifest = dir.join("models.toml");
        std::fs::write(
            &manifest,
            format!(
                "[[models]]\nid = \"tiny-bert\"\ntask = \"embed\"\npath = \"{}\"\nbackends = [\"burn-bert\"]\ndevices = [\"cpu\"]\n",
                fixtures.display()
            ),
        )
        .expect("manifest");
        gllm::link_builtin_backends();
        let runtime =
            gllm_runtime::Runtime::from_manifest_file(&manifest).expect("manifest parses");
        let options = crate::ServeOptions {
            api_key: Some("sekret".into()),
            ..Default::default()
        };
        // Never loaded: the state stays in its loading phase.
        let state = Arc::new(AppState::new(runtime, options));
        let app = build(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let (status, text) = raw(
            addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("\"code\":\"model_loading\""), "{text}");

        let body = r#"{"model":"tiny-bert","input":"hi"}"#;
        let req = format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer sekret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = raw(addr, &req).await;
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("\"type\":\"service_unavailable_error\""),
            "{text}"
        );

        let req = format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = raw(addr, &req).await;
        assert_eq!(status, 401, "{text}");

        let (status, text) = raw(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer sekret\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("gllm_ready 0"), "{text}");
        assert!(
            text.contains(
                "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"\",status=\"503\"} 1"
            ),
            "{text}"
        );
    }
}
