//! A Qwen3-Embedding-layout model served over HTTP: `/v1/embeddings` and TEI's
//! `/embed` with and without `prompt_name`, against sentence-transformers' numbers.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use support::*;

const TOL: f32 = 1e-5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prompt_names_choose_the_models_prompts() -> Result<()> {
    let server = TestServer::start_with(
        &one_model_manifest(
            "qwen3-embed",
            "qwen3-embed",
            "embed",
            "tiny-qwen3-embedding",
            Some("candle-qwen2"),
        )?,
        |_| {},
    )
    .await?;
    let addr = server.addr;
    let r = gllm_testkit::read_json(
        &gllm_testkit::fixture("tiny-qwen3-embedding").join("reference.json"),
    )?;
    for (texts, prompt, want) in [
        ("documents", None, "document_embeddings"),
        ("queries", Some("query"), "query_embeddings"),
    ] {
        let mut body = json!({"model": "qwen3-embed", "input": r[texts]});
        let mut tei = json!({"inputs": r[texts]});
        if let Some(p) = prompt {
            body["prompt_name"] = json!(p);
            tei["prompt_name"] = json!(p);
        }
        let reply = post(addr, "/v1/embeddings", &body).await?;
        ensure!(reply.status == 200, "{}", reply.text());
        let v = reply.json()?;
        let data = v["data"].as_array().context("data")?;
        let want = float_rows(&r[want]);
        ensure!(data.len() == want.len(), "{} rows", data.len());
        for (i, (row, w)) in data.iter().zip(&want).enumerate() {
            let d = max_abs_diff(&floats(&row["embedding"]), w);
            ensure!(d <= TOL, "{texts}[{i}]: max |diff| {d}");
        }
        let reply = post(addr, "/embed", &tei).await?;
        ensure!(reply.status == 200, "{}", reply.text());
        for (i, (got, w)) in float_rows(&reply.json()?).iter().zip(&want).enumerate() {
            let d = max_abs_diff(got, w);
            ensure!(d <= TOL, "TEI {texts}[{i}]: max |diff| {d}");
        }
    }
    let reply = post(
        addr,
        "/v1/embeddings",
        &json!({"input": "x", "prompt_name": "passage"}),
    )
    .await?;
    ensure!(reply.status == 400, "{} {}", reply.status, reply.text());
    let v = reply.json()?;
    let m = v["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        m.contains("`passage`") && m.contains("document, query"),
        "{v}"
    );
    assert_eq!(v["error"]["param"], "prompt_name");
    server.stop().await?;
    Ok(())
}
