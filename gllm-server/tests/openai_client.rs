//! The official `openai` Python package against the server: runs
//! `tests/openai_client.py`, which checks the values against the fixtures. Fails
//! (never skips) when python3 or the package is missing: CI installs it.

mod support;

use anyhow::{Context, Result, ensure};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_openai_python_client_gets_the_reference_values() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let fixtures = gllm_testkit::fixtures_dir();
    let base = format!("http://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(&base)
            .arg(&fixtures)
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .output()
    })
    .await?
    .context("cannot run python3: install it and `pip install openai`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "openai_client.py failed ({}): {stdout}\n{stderr}",
        out.status
    );
    ensure!(
        stdout.contains(" passed, 0 failed"),
        "unexpected output: {stdout}\n{stderr}"
    );
    server.stop().await
}
