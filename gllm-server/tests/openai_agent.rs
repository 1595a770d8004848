//! The official `openai` Python client drives the real Qwen2.5-Coder-0.5B as an agent
//! would (`tests/openai_agent.py`): a tool call whole and streamed, a full tool loop,
//! structured outputs validated with `jsonschema`. Fails (never skips) when python3,
//! a package or the model is missing: CI installs them.

mod support;

use anyhow::{Context, Result, ensure};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tool_calls_and_structured_outputs_through_the_openai_client() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gllm-server-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let manifest = dir.join("models.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[models]]\nid = \"coder\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"candle-qwen2\"]\ndevices = [\"cpu\"]\n",
            gllm_testkit::coder::coder_gguf().display()
        ),
    )?;
    let server = TestServer::start_with(&manifest, |_| {}).await?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_agent.py");
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
    .context("cannot run python3: install it and `pip install openai jsonschema`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "openai_agent.py failed ({}): {stdout}\n{stderr}",
        out.status
    );
    ensure!(
        stdout.contains(" passed, 0 failed"),
        "unexpected output: {stdout}\n{stderr}"
    );
    server.stop().await
}
