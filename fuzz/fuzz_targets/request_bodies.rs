//! Request bodies for every POST endpoint of the server (the first byte picks the
//! endpoint), answered in-process by the real routes over the fixture models
//! (`gllm_testkit::fixture_manifest`: tiny-bert, tiny-cross-encoder, tiny-qwen2): parsing, validation, admission and,
//! for a body that passes, the work itself (bounded by a 2 s request timeout). Any
//! status but 500 is fine, and every error body must be OpenAI's JSON shape; a panic
//! or a 500 is a finding.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use gllm_server::{InProcess, ServeOptions};
use libfuzzer_sys::fuzz_target;

const ENDPOINTS: [&str; 9] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/embed",
    "/v1/rerank",
    "/rerank",
    "/tokenize",
    "/detokenize",
    "/v1/models",
];

fn manifest() -> std::path::PathBuf {
    let path = gllm_fuzz::scratch_dir().join("models.toml");
    std::fs::write(&path, gllm_testkit::fixture_manifest()).expect("manifest");
    path
}

fn server() -> &'static (tokio::runtime::Runtime, InProcess) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, InProcess)> = OnceLock::new();
    SERVER.get_or_init(|| {
        gllm::link_builtin_backends();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let runtime = gllm_runtime::Runtime::from_manifest_file(&manifest()).expect("runtime");
        let options = ServeOptions {
            request_timeout: Duration::from_secs(2),
            max_choices: 2,
            prompt_cache_bytes: 16 << 20,
            kv_budget_bytes: 256 << 20,
            ..Default::default()
        };
        let server = rt
            .block_on(InProcess::load(runtime, options))
            .expect("load the fixture models");
        (rt, server)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let path = ENDPOINTS[which as usize % ENDPOINTS.len()];
    let method = if path == "/v1/models" { "GET" } else { "POST" };
    let (rt, server) = server();
    let answer = rt
        .block_on(server.request(method, path, body.to_vec()))
        .expect("in-process request");
    gllm_fuzz::debug(|| format!("{path}: {}", answer.status));
    assert_ne!(
        answer.status,
        500,
        "{path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    if answer.status >= 400 {
        let v: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("an error body is JSON");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
});
