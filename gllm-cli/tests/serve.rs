//! `gllm serve` as a process: it binds, loads the manifest's models, answers
//! /health and /v1/embeddings with the fixture's numbers, and stops cleanly on SIGTERM.
#![cfg(all(unix, feature = "serve"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gllm_testkit::{assert_close, assert_ranked, fixture, json_f32s, read_json};

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// POSTs the JSON `body` to `path`; the response's JSON, which must come with 200.
fn post(addr: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, text) = http(addr, "POST", path, &body.to_string()).unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// `/v1/embeddings` for tiny-bert's first reference sentence, within `tol` of the
/// reference.
fn check_tiny_bert_embedding(addr: &str, tol: f32) {
    let reference = read_json(&fixture("tiny-bert").join("reference.json")).unwrap();
    let body = serde_json::json!({"model": "tiny-bert", "input": reference["sentences"][0]});
    let v = post(addr, "/v1/embeddings", body);
    assert_close(
        "embedding",
        &json_f32s(&v["data"][0]["embedding"]),
        &json_f32s(&reference["embeddings"][0]),
        tol,
    );
}

/// Starts `gllm serve` and waits until it is healthy; returns the child and its address.
fn start(mut cmd: Command) -> (std::process::Child, String) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    // "gllm serve: listening on http://127.0.0.1:PORT (...)"
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http(&addr, "GET", "/health", "") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never became healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

#[test]
fn serve_answers_with_the_fixture_numbers_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("gllm-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("models.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[models]]\nid = \"tiny-bert\"\ntask = \"embed\"\npath = \"{}\"\ndevices = [\"cpu\"]\n",
            fixture("tiny-bert").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gllm"));
    cmd.arg("--manifest")
        .arg(&manifest)
        .args(["serve", "--port", "0"]);
    let (mut child, addr) = start(cmd);
    check_tiny_bert_embedding(&addr, 1e-5);
    // SIGTERM: a graceful stop with exit status 0
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "gllm serve exited with {status}");
}

#[test]
fn serve_without_a_manifest_serves_each_model_under_its_directory_name() {
    // No manifest: a bare working directory and two models by location.
    let dir = std::env::temp_dir().join(format!("gllm-serve-loc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gllm"));
    cmd.current_dir(&dir)
        .env_remove("GLLM_MANIFEST")
        .args(["serve", "--port", "0", "--model"])
        .arg(fixture("tiny-bert"))
        .arg("--model")
        .arg(fixture("tiny-cross-encoder"));
    let (mut child, addr) = start(cmd);
    let (status, text) = http(&addr, "GET", "/v1/models", "").unwrap();
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["tiny-bert", "tiny-cross-encoder"]);

    // Built-in device order (GPU first, CPU after): 1e-4 covers either.
    check_tiny_bert_embedding(&addr, 1e-4);

    let reference = read_json(&fixture("tiny-cross-encoder").join("reference.json")).unwrap();
    let q = &reference["queries"][0];
    let body = serde_json::json!({
        "model": "tiny-cross-encoder",
        "query": q["query"],
        "documents": q["documents"],
    });
    let v = post(&addr, "/v1/rerank", body);
    let want = json_f32s(&q["scores_sigmoid"]);
    assert_ranked("/v1/rerank", &v["results"], "relevance_score", &want, 1e-4);
    child.kill().unwrap();
    child.wait().unwrap();
}
