//! Test support: a server started in-process on 127.0.0.1:0 over the fixture models,
//! a tiny HTTP/1.1 client over tokio's TcpStream (pure Rust, no TLS stack), and
//! the fixtures' reference numbers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gllm_server::{ServeOptions, Server, ServerError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A manifest over the three fixture models, all on the CPU.
pub fn write_manifest() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gllm-server-tests-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("models.toml");
    let text = gllm_testkit::fixture_manifest();
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// A manifest file (in a fresh temporary directory named after `tag`) holding one
/// model on the CPU: `id` for `task` from the fixture `fixture`, on `backend` if given.
pub fn one_model_manifest(
    tag: &str,
    id: &str,
    task: &str,
    fixture: &str,
    backend: Option<&str>,
) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gllm-server-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("models.toml");
    let backends = backend.map_or_else(String::new, |b| format!("backends = [\"{b}\"]\n"));
    std::fs::write(
        &path,
        format!(
            "[[models]]\nid = \"{id}\"\ntask = \"{task}\"\npath = \"{}\"\n{backends}devices = [\"cpu\"]\n",
            gllm_testkit::fixture(fixture).display()
        ),
    )?;
    Ok(path)
}

/// A running server; dropping it without [`TestServer::stop`] aborts nothing: the
/// test's runtime ends it.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Starts a server with the default options changed by `tweak`, and waits until
    /// `/health` says ready.
    pub async fn start(tweak: impl FnOnce(&mut ServeOptions)) -> Result<Self> {
        Self::start_with(&write_manifest(), tweak).await
    }

    /// [`TestServer::start`] on the manifest file `manifest`.
    pub async fn start_with(
        manifest: &std::path::Path,
        tweak: impl FnOnce(&mut ServeOptions),
    ) -> Result<Self> {
        gllm::link_builtin_backends();
        let runtime = gllm_runtime::Runtime::from_manifest_file(manifest)?;
        let mut options = ServeOptions {
            addr: "127.0.0.1:0".parse()?,
            ..ServeOptions::default()
        };
        tweak(&mut options);
        let api_key = options.api_key.clone();
        let server = Server::bind(runtime, options).await?;
        let addr = server.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let started = std::time::Instant::now();
        loop {
            if let Ok(r) = get(addr, "/health").await
                && r.status == 200
            {
                break;
            }
            if task.is_finished() {
                let r = task.await?;
                bail!("the server stopped while loading: {r:?}");
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the server did not become ready in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = api_key;
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Asks for a graceful shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Shuts down gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> Result<()> {
        self.begin_stop();
        match self.task.take() {
            Some(t) => Ok(tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .context("shutdown took over 60 s")???),
            None => Ok(()),
        }
    }

    /// Waits for `run` to return (after [`TestServer::begin_stop`]).
    pub async fn join(mut self) -> Result<()> {
        match self.task.take() {
            Some(t) => Ok(tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .context("shutdown took over 60 s")???),
            None => Ok(()),
        }
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {}, body not JSON: {}", self.status, self.text()))
    }

    /// The `data:` payloads of a server-sent-event body.
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }

    /// Asserts an OpenAI-shaped error with this status; returns the `error` object.
    pub fn expect_error(&self, status: u16) -> Result<Value> {
        if self.status != status {
            bail!("expected {status}, got {}: {}", self.status, self.text());
        }
        let v = self.json()?;
        let e = v
            .get("error")
            .cloned()
            .with_context(|| format!("no `error` in {v}"))?;
        for key in ["message", "type", "param", "code"] {
            if e.get(key).is_none() {
                bail!("error object without `{key}`: {e}");
            }
        }
        if !e["message"].is_string() || !e["type"].is_string() {
            bail!("error message/type not strings: {e}");
        }
        Ok(e)
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .flat_map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(|d| d.trim_start().to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").context("chunk size line")?;
        let size_text = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size `{size_text}`"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Parses a whole HTTP/1.1 response (the connection was closed after it).
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let head_end = find(raw, b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let body = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the
/// whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    let mut s = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        // The server may answer (413) and close before reading a large body.
        let _ = s.write_all(b).await;
    }
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the response arrived (the server closed with unread input).
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    parse_response(&raw)
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    request(addr, "GET", path, &[], None).await
}

pub async fn get_auth(addr: SocketAddr, path: &str, key: &str) -> Result<Response> {
    let auth = format!("Bearer {key}");
    request(addr, "GET", path, &[("Authorization", &auth)], None).await
}

pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Response> {
    let bytes = serde_json::to_vec(body)?;
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&bytes),
    )
    .await
}

pub async fn post_raw(addr: SocketAddr, path: &str, body: &[u8]) -> Result<Response> {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
    )
    .await
}

/// The value of one sample line of a Prometheus text (`name{labels}` exactly).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ---- references ----

pub fn reference(name: &str) -> Value {
    let path = gllm_testkit::fixture(name).join("reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

/// (sentence, embedding) pairs of tiny-bert.
pub fn bert_cases() -> Vec<(String, Vec<f32>)> {
    let r = reference("tiny-bert");
    let sentences = r["sentences"].as_array().expect("sentences");
    let embeddings = r["embeddings"].as_array().expect("embeddings");
    sentences
        .iter()
        .zip(embeddings)
        .map(|(s, e)| {
            (
                s.as_str().expect("sentence").to_string(),
                e.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("number") as f32)
                    .collect(),
            )
        })
        .collect()
}

/// One rerank case: query, documents, logits, sigmoid scores.
pub struct RerankCase {
    pub query: String,
    pub documents: Vec<String>,
    pub logits: Vec<f32>,
    pub scores: Vec<f32>,
}

pub fn rerank_cases() -> Vec<RerankCase> {
    let r = reference("tiny-cross-encoder");
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    };
    r["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .map(|q| RerankCase {
            query: q["query"].as_str().expect("query").to_string(),
            documents: q["documents"]
                .as_array()
                .expect("documents")
                .iter()
                .map(|d| d.as_str().expect("doc").to_string())
                .collect(),
            logits: floats(&q["logits"]),
            scores: floats(&q["scores_sigmoid"]),
        })
        .collect()
}

/// One chat case with its first 8 greedy tokens.
pub struct ChatCase {
    pub messages: Value,
    /// Chat-template variables of the case (sent as `chat_template_kwargs`).
    pub kwargs: serde_json::Map<String, Value>,
    pub prompt_tokens: usize,
    pub greedy_ids: Vec<u32>,
    pub text: String,
}

/// Every chat-template case of tiny-qwen2, with its template variables.
pub fn chat_cases() -> Vec<ChatCase> {
    let r = reference("tiny-qwen2");
    r["chat_template"]
        .as_array()
        .expect("chat_template")
        .iter()
        .map(|c| ChatCase {
            messages: c["messages"].clone(),
            // every other key of the case is a template variable (e.g. enable_thinking)
            kwargs: c
                .as_object()
                .expect("case")
                .iter()
                .filter(|(k, _)| {
                    ![
                        "messages",
                        "add_generation_prompt",
                        "text",
                        "input_ids",
                        "greedy_8",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            prompt_tokens: c["input_ids"].as_array().expect("ids").len(),
            greedy_ids: c["greedy_8"]["ids"]
                .as_array()
                .expect("greedy ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect(),
            text: c["greedy_8"]["text_skip_special"]
                .as_str()
                .expect("text")
                .to_string(),
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// An array of float arrays (embedding rows), as f32 rows.
pub fn float_rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .map(|a| a.iter().map(floats).collect())
        .unwrap_or_default()
}

/// Collects the text and the final chunk of a streamed chat completion.
pub fn chat_stream_text(events: &[String]) -> Result<(String, Option<Value>, Vec<Value>)> {
    if events.last().map(String::as_str) != Some("[DONE]") {
        bail!("stream does not end with [DONE]: {events:?}");
    }
    let mut text = String::new();
    let mut usage = None;
    let mut chunks = Vec::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).with_context(|| format!("event {e}"))?;
        if v.get("error").is_some() {
            bail!("error event: {v}");
        }
        if let Some(c) = v["choices"].get(0) {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(t) = c["text"].as_str() {
                text.push_str(t);
            }
        }
        if v.get("usage").is_some_and(|u| !u.is_null()) {
            usage = Some(v["usage"].clone());
        }
        chunks.push(v);
    }
    Ok((text, usage, chunks))
}
