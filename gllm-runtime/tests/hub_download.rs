//! `hf = "org/name"` downloads (the `download` feature) against a local stand-in
//! for the Hugging Face Hub: the fixture models are served over plain HTTP on
//! 127.0.0.1, loaded through the Runtime and checked against their reference
//! numbers; then loaded again from the cache with the server gone (also with
//! HF_HUB_OFFLINE=1). Errors: a missing repo, a private repo without a token, an
//! interrupted transfer (no complete-looking file; the next run resumes it), a
//! GGUF repo without `file`, offline and not cached, Hub unreachable.
//!
//! The Hub configuration comes from process-wide environment variables, so
//! everything runs in one #[test] function: nothing else in this binary reads
//! or writes them concurrently.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail, ensure};
use gllm_runtime::Runtime;
use gllm_runtime::api::WeightFormat;
use gllm_runtime::hub::DownloadProgress;
use gllm_testkit::{assert_close, fixture, json_f32s, json_u32s, read_json};

const SHA_BERT: &str = "1111111111111111111111111111111111111111";
const SHA_CUT: &str = "2222222222222222222222222222222222222222";
const SHA_GGUF: &str = "3333333333333333333333333333333333333333";
const SHA_PRIVATE: &str = "4444444444444444444444444444444444444444";
const TOKEN: &str = "hf_test_token";
/// Where the server cuts `model.safetensors` of `fixtures/cut-bert` while `cut` is set.
const CUT_AT: usize = 1 << 20;

/// What the stand-in Hub serves and what it saw.
#[derive(Default)]
struct HubState {
    /// Close `fixtures/cut-bert`'s model.safetensors after CUT_AT bytes.
    cut: AtomicBool,
    /// Every request line with its Range header, in order.
    log: Mutex<Vec<String>>,
}

struct Repo {
    sha: &'static str,
    dir: PathBuf,
    /// Needs `Authorization: Bearer TOKEN`.
    private: bool,
}

fn repos() -> BTreeMap<&'static str, Repo> {
    let repo = |sha, dir, private| Repo { sha, dir, private };
    BTreeMap::from([
        (
            "fixtures/tiny-bert",
            repo(SHA_BERT, fixture("tiny-bert"), false),
        ),
        (
            "fixtures/cut-bert",
            repo(SHA_CUT, fixture("tiny-bert"), false),
        ),
        (
            "fixtures/tiny-qwen2-gguf",
            repo(SHA_GGUF, fixture("gguf"), false),
        ),
        (
            "private/repo",
            repo(SHA_PRIVATE, fixture("tiny-bert"), true),
        ),
    ])
}

/// Every file under `dir`, as `/`-separated relative paths.
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Server {
    addr: SocketAddr,
    state: Arc<HubState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(HubState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    // A failed connection is the client's problem to report.
                    let _ = serve(conn, &st);
                });
            }
        });
        Ok(Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops accepting and closes the port.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()?;
    Ok(())
}

/// One request: the revision API, a file download, or an error.
fn serve(mut conn: TcpStream, state: &HubState) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if let Ok(mut log) = state.log.lock() {
        log.push(format!("{path} range={}", range.as_deref().unwrap_or("-")));
    }
    let repos = repos();
    let not_found = |conn: &mut TcpStream, code: &str| {
        respond(
            conn,
            "404 Not Found",
            &[("X-Error-Code", code.to_string())],
            b"{\"error\": \"not found\"}",
        )
    };
    let authorized =
        |repo: &Repo| !repo.private || auth.as_deref() == Some(&format!("Bearer {TOKEN}"));

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((name, revision)) = rest.split_once("/revision/") else {
            return not_found(&mut conn, "RepoNotFound");
        };
        let Some(repo) = repos.get(name) else {
            return not_found(&mut conn, "RepoNotFound");
        };
        if !authorized(repo) {
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[],
                b"{\"error\": \"unauthorized\"}",
            );
        }
        if revision != "main" && revision != repo.sha {
            return not_found(&mut conn, "RevisionNotFound");
        }
        let siblings: Vec<_> = list_files(&repo.dir)?
            .into_iter()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": name, "sha": repo.sha, "siblings": siblings });
        return respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }
    // /{org}/{name}/resolve/{commit}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", commit, file] = parts[..] else {
        return not_found(&mut conn, "RepoNotFound");
    };
    let Some(repo) = repos.get(format!("{org}/{name}").as_str()) else {
        return not_found(&mut conn, "RepoNotFound");
    };
    if !authorized(repo) {
        return respond(&mut conn, "401 Unauthorized", &[], b"");
    }
    let local = repo.dir.join(file);
    if commit != repo.sha || file.contains("..") || !local.is_file() {
        return not_found(&mut conn, "EntryNotFound");
    }
    let data = std::fs::read(&local)?;
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    if let Some(start) = start {
        if start >= data.len() {
            return respond(&mut conn, "416 Range Not Satisfiable", &[], b"");
        }
        let content_range = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
        return respond(
            &mut conn,
            "206 Partial Content",
            &[("Content-Range", content_range)],
            &data[start..],
        );
    }
    if org == "fixtures"
        && name == "cut-bert"
        && file == "model.safetensors"
        && state.cut.load(Ordering::SeqCst)
    {
        // The full length announced, part of the body sent, then the connection closed.
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(&data[..CUT_AT])?;
        conn.flush()?;
        conn.shutdown(std::net::Shutdown::Both)?;
        return Ok(());
    }
    respond(&mut conn, "200 OK", &[], &data)
}

const MANIFEST: &str = r#"
[[models]]
id = "tiny"
task = "embed"
hf = "fixtures/tiny-bert"
backends = ["burn-bert"]
devices = ["cpu"]

[[models]]
id = "pinned"
task = "embed"
hf = "fixtures/tiny-bert"
revision = "1111111111111111111111111111111111111111"
backends = ["burn-bert"]
devices = ["cpu"]

[[models]]
id = "cut"
task = "embed"
hf = "fixtures/cut-bert"
backends = ["burn-bert"]
devices = ["cpu"]

[[models]]
id = "missing"
task = "embed"
hf = "missing/repo"

[[models]]
id = "private"
task = "embed"
hf = "private/repo"
backends = ["burn-bert"]
devices = ["cpu"]

[[models]]
id = "gguf"
task = "generate"
hf = "fixtures/tiny-qwen2-gguf"
file = "tiny-qwen2-q8_0.gguf"
backends = ["candle-qwen2"]
devices = ["cpu"]

[[models]]
id = "gguf-no-file"
task = "generate"
hf = "fixtures/tiny-qwen2-gguf"

[[models]]
id = "gguf-wrong-file"
task = "generate"
hf = "fixtures/tiny-qwen2-gguf"
file = "tiny-qwen2-q4_0.gguf"

[[models]]
id = "never"
task = "embed"
hf = "fixtures/never-downloaded"
"#;

/// Sets or removes an environment variable.
fn set_env(name: &str, value: Option<&str>) {
    // SAFETY: this test binary has one test function, and it changes the
    // environment only between model loads, from its own thread: the stand-in
    // Hub's threads never read the environment, and no model work (whose thread
    // pools could read it) is in flight at these points.
    unsafe {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

fn err_of<T>(r: gllm_runtime::Result<T>) -> Result<String> {
    match r {
        Ok(_) => bail!("expected an error"),
        Err(e) => Ok(e.to_string()),
    }
}

fn ensure_contains(msg: &str, parts: &[&str]) -> Result<()> {
    for p in parts {
        ensure!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
    Ok(())
}

/// Embeds the tiny-bert reference sentences with model `id` and checks them
/// against reference.json (max |Δ| ≤ 1e-5, the fixtures' tolerance for f32).
/// The runtime of `manifest`, with the built-in backends linked (the runtime links none).
fn runtime_of(manifest: &std::path::Path) -> gllm_runtime::Result<Runtime> {
    std::hint::black_box(&burn_bert::FACTORY);
    std::hint::black_box(&candle_qwen2::FACTORY);
    Runtime::from_manifest_file(manifest)
}

fn check_tiny_bert(runtime: &Runtime, id: &str) -> Result<()> {
    let reference = read_json(&fixture("tiny-bert").join("reference.json"))?;
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .context("reference sentences")?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    ensure!(
        sentences.len() >= 3,
        "{} reference sentences",
        sentences.len()
    );
    let rows = runtime.embedder_blocking(id)?.embed_blocking(&sentences)?;
    ensure!(rows.len() == sentences.len(), "{} rows", rows.len());
    for (i, row) in rows.iter().enumerate() {
        let want = json_f32s(&reference["embeddings"][i]);
        ensure!(
            want.len() == 32,
            "reference embedding {i} has {} values",
            want.len()
        );
        assert_close(&format!("{id}: sentence {i}"), &row.embedding, &want, 1e-5);
        ensure!(row.tokens == json_u32s(&reference["input_ids"][i]).len());
    }
    Ok(())
}

/// Every file under `dir` ends with no `.incomplete`, and is byte-identical to the fixture's.
fn check_snapshot(snap: &Path, fixture_dir: &Path, want: &[&str]) -> Result<()> {
    let got = list_files(snap)?;
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    ensure!(
        got == want,
        "snapshot {} has {got:?}, expected {want:?}",
        snap.display()
    );
    for f in &got {
        let (a, b) = (
            std::fs::read(snap.join(f))?,
            std::fs::read(fixture_dir.join(f))?,
        );
        ensure!(a == b, "{f} differs from the fixture");
    }
    Ok(())
}

/// A fresh directory under the system temp dir, removed when the test ends (also on failure).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("gllm-hub-download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A progress event: (file, done, total, finished).
type Event = (String, u64, Option<u64>, bool);

#[test]
fn models_download_from_the_hub_into_its_cache() -> Result<()> {
    let guard = TempDir::new()?;
    let tmp = guard.0.clone();
    let cache = tmp.join("hub");
    let manifest = tmp.join("models.toml");
    std::fs::write(&manifest, MANIFEST)?;
    let server = Server::start()?;
    set_env("HF_ENDPOINT", Some(&server.endpoint()));
    set_env("HF_HUB_CACHE", Some(&cache.to_string_lossy()));
    set_env("HF_HOME", Some(&tmp.join("home").to_string_lossy()));
    for v in ["HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE"] {
        set_env(v, None);
    }
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    gllm_runtime::hub::set_progress_handler(Some(Arc::new(move |p: &DownloadProgress<'_>| {
        if let Ok(mut e) = sink.lock() {
            e.push((p.file.to_string(), p.done, p.total, p.finished));
        }
    })));

    // 1. Download, load, compare with the reference.
    let runtime = runtime_of(&manifest)?;
    check_tiny_bert(&runtime, "tiny")?;
    let repo_dir = cache.join("models--fixtures--tiny-bert");
    ensure!(std::fs::read_to_string(repo_dir.join("refs/main"))? == SHA_BERT);
    let bert_files = [
        "1_Pooling/config.json",
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    // Only what gllm reads: not vocab.txt, reference.json, reference.safetensors.
    check_snapshot(
        &repo_dir.join("snapshots").join(SHA_BERT),
        &fixture("tiny-bert"),
        &bert_files,
    )?;
    let weights_len = std::fs::metadata(fixture("tiny-bert").join("model.safetensors"))?.len();
    let weight_events: Vec<_> = events
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.0 == "model.safetensors")
        .collect();
    ensure!(weight_events.len() >= 3, "{weight_events:?}");
    ensure!(
        weight_events.windows(2).all(|w| w[0].1 <= w[1].1),
        "progress went back"
    );
    ensure!(weight_events.iter().all(|e| e.2 == Some(weights_len)));
    ensure!(weight_events[0].1 == 0 && !weight_events[0].3);
    let last = weight_events.last().context("no events")?;
    ensure!(last.1 == weights_len && last.3, "last event {last:?}");
    // A pinned commit that is cached loads without asking the Hub.
    let before = server.log().len();
    check_tiny_bert(&runtime_of(&manifest)?, "pinned")?;
    ensure!(
        server.log().len() == before,
        "a cached commit asked the Hub: {:?}",
        &server.log()[before..]
    );

    // 2. Errors name the repo.
    let runtime = runtime_of(&manifest)?;
    let msg = err_of(runtime.plan("missing"))?;
    ensure_contains(
        &msg,
        &[
            "model `missing`",
            "`missing/repo`",
            "not found",
            &server.endpoint(),
        ],
    )?;
    let msg = err_of(runtime.plan("private"))?;
    ensure_contains(&msg, &["`private/repo`", "HTTP 401", "set HF_TOKEN"])?;
    set_env("HF_TOKEN", Some(TOKEN));
    let plan = runtime.plan("private")?;
    ensure!(plan.path.ends_with(SHA_PRIVATE), "{}", plan.path);
    set_env("HF_TOKEN", None);

    // 3. An interrupted transfer leaves no complete-looking file; the next run resumes.
    server.state.cut.store(true, Ordering::SeqCst);
    let msg = err_of(runtime.embedder_blocking("cut"))?;
    ensure_contains(
        &msg,
        &["`fixtures/cut-bert`", "model.safetensors", "interrupted"],
    )?;
    let cut_dir = cache.join("models--fixtures--cut-bert");
    let cut_snap = cut_dir.join("snapshots").join(SHA_CUT);
    ensure!(
        !cut_snap.join("model.safetensors").exists(),
        "a half file looks complete"
    );
    ensure!(
        !cut_dir.join("refs/main").exists(),
        "refs/main points at an incomplete snapshot"
    );
    let partial = std::fs::metadata(cut_snap.join("model.safetensors.incomplete"))?.len();
    ensure!(partial == CUT_AT as u64, "{partial} bytes kept");
    server.state.cut.store(false, Ordering::SeqCst);
    check_tiny_bert(&runtime_of(&manifest)?, "cut")?;
    let resumed = format!("range=bytes={CUT_AT}-");
    ensure!(
        server
            .log()
            .iter()
            .any(|l| l.contains("cut-bert/resolve") && l.ends_with(&resumed)),
        "no resumed request: {:?}",
        server.log()
    );
    check_snapshot(&cut_snap, &fixture("tiny-bert"), &bert_files)?;

    // 4. GGUF: one file of the repo, named by `file`.
    let plan = runtime.plan("gguf")?;
    ensure!(plan.format == WeightFormat::Gguf, "{:?}", plan.format);
    ensure!(plan.architecture == "qwen2", "{}", plan.architecture);
    let gguf_snap = cache
        .join("models--fixtures--tiny-qwen2-gguf/snapshots")
        .join(SHA_GGUF);
    ensure!(
        Path::new(&plan.path) == gguf_snap.join("tiny-qwen2-q8_0.gguf"),
        "{}",
        plan.path
    );
    check_snapshot(&gguf_snap, &fixture("gguf"), &["tiny-qwen2-q8_0.gguf"])?;
    let msg = err_of(runtime.plan("gguf-no-file"))?;
    ensure_contains(
        &msg,
        &[
            "`fixtures/tiny-qwen2-gguf`",
            "file = \"tiny-qwen2-",
            "tiny-qwen2-f16.gguf",
        ],
    )?;
    let msg = err_of(runtime.plan("gguf-wrong-file"))?;
    ensure_contains(
        &msg,
        &[
            "`fixtures/tiny-qwen2-gguf`",
            "tiny-qwen2-q4_0.gguf",
            "not found",
            "tiny-qwen2-q8_0.gguf",
        ],
    )?;

    // 5. Offline and not cached.
    set_env("HF_HUB_OFFLINE", Some("1"));
    let msg = err_of(runtime.plan("never"))?;
    ensure_contains(
        &msg,
        &[
            "hf = \"fixtures/never-downloaded\"",
            "not in the Hugging Face cache",
            "HF_HUB_OFFLINE",
        ],
    )?;
    set_env("HF_HUB_OFFLINE", None);

    // 6. The Hub is gone: the cache serves, online and offline.
    server.stop();
    check_tiny_bert(&runtime_of(&manifest)?, "tiny")?;
    let msg = err_of(runtime_of(&manifest)?.plan("never"))?;
    ensure_contains(&msg, &["`fixtures/never-downloaded`", "cannot reach"])?;
    set_env("HF_HUB_OFFLINE", Some("1"));
    check_tiny_bert(&runtime_of(&manifest)?, "tiny")?;
    ensure!(runtime_of(&manifest)?.plan("gguf")?.format == WeightFormat::Gguf);
    set_env("HF_HUB_OFFLINE", None);
    let leftovers: Vec<String> = list_files(&cache)?
        .into_iter()
        .filter(|f| f.ends_with(".incomplete"))
        .collect();
    ensure!(leftovers.is_empty(), "partial files left: {leftovers:?}");

    gllm_runtime::hub::set_progress_handler(None);
    Ok(())
}
