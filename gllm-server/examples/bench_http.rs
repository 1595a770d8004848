//! Embedding throughput over HTTP with concurrent clients, beside the in-process
//! figure on the same loaded model (not a timed test: a benchmark to read).
//!
//! ```text
//! cargo run --release -p gllm-server --example bench_http -- \
//!     [--model-dir DIR | --manifest FILE --model ID] [--clients 1,4,16,64] \
//!     [--per-request 1] [--corpus ../shared/bench/corpus.txt]
//! ```
//!
//! By default it serves the real all-MiniLM-L6-v2 from `$GLLM_TEST_MODELS` (else
//! `~/.cache/gllm-test-models`, filled by `scripts/fetch-models.sh`) on the CPU.
//! Each client sends `--per-request` corpus lines per `POST /v1/embeddings` over a
//! keep-alive connection until the corpus is done; the server batches what arrives
//! together. The in-process figure is `EmbedderHandle::embed_blocking` over the whole
//! corpus (length-sorted batches of 32), as `gllm bench embed` measures it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gllm_runtime::Runtime;
use gllm_server::{ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    manifest: Option<PathBuf>,
    model: String,
    model_dir: Option<PathBuf>,
    clients: Vec<usize>,
    per_request: usize,
    corpus: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        manifest: None,
        model: "minilm".into(),
        model_dir: None,
        clients: vec![1, 4, 16, 64],
        per_request: 1,
        corpus: workspace_root().join("../shared/bench/corpus.txt"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--manifest" => a.manifest = Some(value()?.into()),
            "--model" => a.model = value()?,
            "--model-dir" => a.model_dir = Some(value()?.into()),
            "--clients" => {
                a.clients = value()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            "--per-request" => a.per_request = value()?.parse()?,
            "--corpus" => a.corpus = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.clients.is_empty() || a.clients.contains(&0) || a.per_request == 0 {
        bail!("--clients and --per-request must be positive");
    }
    Ok(a)
}

/// A one-model manifest over the real MiniLM (or `--model-dir`), CPU only.
fn default_manifest(args: &Args) -> Result<PathBuf> {
    let dir = match &args.model_dir {
        Some(d) => d.clone(),
        None => {
            let base = std::env::var_os("GLLM_TEST_MODELS")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/gllm-test-models")
                });
            base.join("all-MiniLM-L6-v2")
        }
    };
    if !dir.exists() {
        bail!(
            "{} is missing: run scripts/fetch-models.sh, or pass --model-dir / --manifest",
            dir.display()
        );
    }
    let path = std::env::temp_dir().join(format!("gllm-bench-http-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[[models]]\nid = \"{}\"\ntask = \"embed\"\npath = \"{}\"\nbackends = [\"burn-bert\"]\ndevices = [\"cpu\"]\n",
            args.model,
            dir.display()
        ),
    )?;
    Ok(path)
}

/// A keep-alive HTTP/1.1 connection that posts JSON and reads `Content-Length` bodies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .context("status")?
            .parse()
            .context("status")?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        let total = head_end + 4 + len;
        while self.buf.len() < total {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-body");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end + 4..total].to_vec();
        self.buf.drain(..total);
        Ok((status, body))
    }
}

async fn run_http(
    addr: SocketAddr,
    model: &str,
    sentences: Arc<Vec<String>>,
    clients: usize,
    per_request: usize,
) -> Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, sentences, model) = (next.clone(), sentences.clone(), model.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            loop {
                let i = next.fetch_add(per_request, Ordering::Relaxed);
                if i >= sentences.len() {
                    return Ok::<_, anyhow::Error>(());
                }
                let end = (i + per_request).min(sentences.len());
                let body = serde_json::to_vec(
                    &serde_json::json!({"model": model, "input": &sentences[i..end]}),
                )?;
                let (status, resp) = conn.post("/v1/embeddings", &body).await?;
                if status != 200 {
                    bail!("status {status}: {}", String::from_utf8_lossy(&resp));
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Best of two runs of `embed_blocking` over the corpus (after a warm-up).
async fn in_process(
    handle: &gllm_runtime::EmbedderHandle,
    sentences: &[String],
) -> Result<(f64, usize)> {
    let h = handle.clone();
    let s = sentences.to_vec();
    tokio::task::spawn_blocking(move || -> Result<(f64, usize)> {
        h.embed_blocking(&s[..s.len().min(64)])?; // warm-up
        let mut best = f64::INFINITY;
        let mut tokens = 0;
        for _ in 0..2 {
            let t = Instant::now();
            let rows = h.embed_blocking(&s)?;
            best = best.min(t.elapsed().as_secs_f64());
            tokens = rows.iter().map(|r| r.tokens).sum();
        }
        Ok((best, tokens))
    })
    .await?
}

async fn metrics_line(addr: SocketAddr, series: &str) -> Result<String> {
    let mut conn = Conn::open(addr).await?;
    // GET through the same little client: a POST-less request.
    let head = "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    conn.stream.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    conn.stream.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).to_string();
    Ok(text
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or("")
        .to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let manifest = match &args.manifest {
        Some(m) => m.clone(),
        None => default_manifest(&args)?,
    };
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading {}", args.corpus.display()))?;
    let sentences: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let runtime = Runtime::from_manifest_file(&manifest)?;

    // In-process, on the same loaded model the server will use.
    let handle = runtime.embedder(&args.model).await?;
    let active = handle.active();
    println!(
        "model {}: {} on {}, corpus {} ({} sentences)",
        args.model,
        active.backend,
        active.device,
        args.corpus.display(),
        sentences.len()
    );
    let (inproc, tokens) = in_process(&handle, &sentences).await?;

    let options = ServeOptions {
        addr: "127.0.0.1:0".parse()?,
        max_queue: 4096,
        ..ServeOptions::default()
    };
    let server = Server::bind(runtime, options).await?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    loop {
        let line = metrics_line(addr, "gllm_ready").await.unwrap_or_default();
        if line.trim() == "gllm_ready 1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sentences = Arc::new(sentences);
    // Warm-up over HTTP.
    run_http(
        addr,
        &args.model,
        Arc::new(sentences[..64.min(sentences.len())].to_vec()),
        4,
        1,
    )
    .await?;

    println!();
    println!("| path | clients | sentences/request | sentences/s | tokens/s | vs in-process |");
    println!("|---|---|---|---|---|---|");
    let n = sentences.len() as f64;
    println!(
        "| in-process `embed_blocking` (batches of 32) | - | {} | {:.1} | {:.0} | 1.00 |",
        sentences.len(),
        n / inproc,
        tokens as f64 / inproc
    );
    for &c in &args.clients {
        let secs = run_http(addr, &args.model, sentences.clone(), c, args.per_request).await?;
        println!(
            "| HTTP `POST /v1/embeddings` | {c} | {} | {:.1} | {:.0} | {:.2} |",
            args.per_request,
            n / secs,
            tokens as f64 / secs,
            inproc / secs
        );
    }
    // Again after the HTTP runs: the machine's load drifts, compare within one run.
    let (again, _) = in_process(&handle, &sentences).await?;
    println!(
        "| in-process again, after the HTTP runs | - | {} | {:.1} | {:.0} | {:.2} |",
        sentences.len(),
        n / again,
        tokens as f64 / again,
        inproc / again
    );
    let series = format!("gllm_batch_requests_max{{model=\"{}\"}}", args.model);
    println!();
    println!(
        "largest batch: {}",
        metrics_line(addr, &series).await.unwrap_or_default()
    );
    let _ = stop.send(());
    serving.await??;
    Ok(())
}
