//! # gllm-server
//!
//! `gllm serve`: an OpenAI- and TEI-compatible HTTP server over a
//! [`gllm_runtime::Runtime`].
//!
//! - OpenAI: `POST /v1/embeddings`, `POST /v1/chat/completions` (with server-sent
//!   events for `stream: true`), `POST /v1/completions`, `GET /v1/models`.
//! - Rerank: `POST /v1/rerank` (Cohere/Jina shape); TEI: `POST /rerank`, `POST /embed`.
//! - `GET /health` (200 once every model of the manifest is loaded, 503 before: the
//!   readiness probe) and `GET /metrics` (Prometheus text).
//!
//! Embedding and rerank requests are batched across clients up to a padded token
//! budget ([`batching`](crate::batching)); every model has a bounded queue (429 when
//! full); bodies are limited (413), requests time out (504), errors use OpenAI's JSON
//! shape, and shutdown finishes the requests in flight.
//!
//! ```no_run
//! # async fn run() -> Result<(), gllm_server::ServerError> {
//! let runtime = gllm_runtime::Runtime::from_manifest_file("models.toml".as_ref())
//!     .expect("manifest");
//! let options = gllm_server::ServeOptions::default();
//! gllm_server::serve(runtime, options, gllm_server::shutdown_signal()).await
//! # }
//! ```
#![warn(missing_docs)]

mod accept;
mod batching;
mod error;
mod handlers;
mod in_process;
mod metrics;
mod router;
mod state;
mod types;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gllm_runtime::Runtime;
use tokio::net::TcpListener;

pub use error::{ApiError, ServerError};
pub use in_process::{Answer, InProcess};

/// How the server listens and protects itself. Plain data, no CLI parser attached.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen; port 0 picks a free port (see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// When set, every endpoint but `/health` needs `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Requests that may wait per model (batch queue, or generations waiting for a slot)
    /// before new ones get 429.
    pub max_queue: usize,
    /// Largest request body in bytes (413 above).
    pub body_limit: usize,
    /// Longest a request may take, streams included (504 before the response starts;
    /// a stream that runs past it ends with an error event).
    pub request_timeout: Duration,
    /// Padded token budget of one embedding/rerank batch: longest sequence × sequences.
    pub max_batch_tokens: usize,
    /// Generations that run at once per model (each with its own KV cache); more wait
    /// in the queue.
    pub max_concurrent_generations: usize,
    /// Most answers one chat or completion request may ask for (`n`; 400 above).
    pub max_choices: usize,
    /// Bytes of KV cache each generation model keeps from finished requests, so that a
    /// prompt beginning as an earlier one did prefills only what is new (0: none).
    pub prompt_cache_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers (also the idle time of a
    /// kept-alive connection) before its connection is closed.
    pub header_timeout: Duration,
    /// Bytes of KV cache all running generations may hold together, each counted for
    /// its prompt plus `max_tokens` (capped at the context); a generation that does not
    /// fit now is a 429, one larger than the whole budget a 400. 0: no budget. The
    /// default is half of the memory available at startup.
    pub kv_budget_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            max_queue: 256,
            body_limit: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            max_batch_tokens: 16384,
            max_concurrent_generations: 8,
            max_choices: 8,
            prompt_cache_bytes: 512 * 1024 * 1024,
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            kv_budget_bytes: default_kv_budget(),
        }
    }
}

/// Half of `MemAvailable` (Linux), or no budget where that is unknown.
pub fn default_kv_budget() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024) / 2)
}

impl ServeOptions {
    fn check(&self) -> Result<(), ServerError> {
        let fail = |m: &str| Err(ServerError::Options(m.to_string()));
        if self.max_queue == 0 {
            return fail("max_queue must be at least 1");
        }
        if self.body_limit == 0 {
            return fail("body_limit must be at least 1 byte");
        }
        if self.request_timeout.is_zero() {
            return fail("request_timeout must be positive");
        }
        if self.max_batch_tokens == 0 {
            return fail("max_batch_tokens must be at least 1");
        }
        if self.max_concurrent_generations == 0 {
            return fail("max_concurrent_generations must be at least 1");
        }
        if self.max_connections == 0 {
            return fail("max_connections must be at least 1");
        }
        if self.header_timeout.is_zero() {
            return fail("header_timeout must be positive");
        }
        if self.max_choices == 0 {
            return fail("max_choices must be at least 1");
        }
        if self.api_key.as_deref() == Some("") {
            return fail("the API key must not be empty");
        }
        Ok(())
    }
}

/// A bound, not yet running server: [`Server::local_addr`] tells the port when
/// [`ServeOptions::addr`] asked for port 0; [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    runtime: Runtime,
    options: ServeOptions,
}

impl Server {
    /// Checks the options and opens the listening socket.
    pub async fn bind(runtime: Runtime, options: ServeOptions) -> Result<Self, ServerError> {
        options.check()?;
        let listener =
            TcpListener::bind(options.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: options.addr,
                    source,
                })?;
        Ok(Self {
            listener,
            runtime,
            options,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting connections and
    /// finishes the requests in flight (streams included) before returning.
    ///
    /// Every model of the manifest is loaded in the background as soon as this
    /// starts; until all are loaded `/health` and the model endpoints answer 503.
    /// If a model fails to load, the server shuts down and returns
    /// [`ServerError::Load`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr()?;
        let limits = (self.options.max_connections, self.options.header_timeout);
        let state = Arc::new(state::AppState::new(self.runtime, self.options));
        let app = router::build(state.clone());
        // `gllm serve` tests read the bound port from this line: keep its form.
        eprintln!(
            "gllm serve: listening on http://{addr} (loading {} models)",
            state.runtime.manifest().models.len()
        );

        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<ServerError>();
        let loader = state.clone();
        tokio::spawn(async move {
            if let Err(e) = loader.load_all().await {
                let _ = fail_tx.send(e);
            }
        });
        let failure: Arc<Mutex<Option<ServerError>>> = Arc::default();
        let slot = failure.clone();
        let stop = async move {
            let mut shutdown = std::pin::pin!(shutdown);
            tokio::select! {
                _ = &mut shutdown => {}
                r = fail_rx => match r {
                    Ok(e) => {
                        eprintln!("gllm serve: {e}; shutting down");
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(e);
                        }
                    }
                    // Loading succeeded: serve until asked to stop.
                    Err(_) => shutdown.await,
                },
            }
            eprintln!("gllm serve: shutting down, finishing requests in flight");
        };
        accept::serve(self.listener, app, limits.0, limits.1, stop).await;
        drop(state);
        let failed = failure.lock().ok().and_then(|mut f| f.take());
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Binds `options.addr` and serves `runtime` until `shutdown` completes (see
/// [`Server::run`]). This is what `gllm serve` calls, with [`shutdown_signal`].
pub async fn serve(
    runtime: Runtime,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(runtime, options).await?.run(shutdown).await
}

/// Completes on Ctrl-C or SIGTERM: the usual `shutdown` for [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(ServeOptions::default().check().is_ok());
        let bad = [
            ServeOptions {
                max_queue: 0,
                ..Default::default()
            },
            ServeOptions {
                body_limit: 0,
                ..Default::default()
            },
            ServeOptions {
                request_timeout: Duration::ZERO,
                ..Default::default()
            },
            ServeOptions {
                max_batch_tokens: 0,
                ..Default::default()
            },
            ServeOptions {
                max_concurrent_generations: 0,
                ..Default::default()
            },
            ServeOptions {
                api_key: Some(String::new()),
                ..Default::default()
            },
        ];
        for o in bad {
            assert!(matches!(o.check(), Err(ServerError::Options(_))), "{o:?}");
        }
    }
}
