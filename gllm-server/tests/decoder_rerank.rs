//! A Qwen3-Reranker-layout model served over HTTP: `/v1/rerank` (with `top_n` and
//! `return_documents`) and TEI's `/rerank`, against transformers' numbers.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerank_endpoints_score_as_transformers() -> Result<()> {
    let server = TestServer::start_with(
        &one_model_manifest(
            "qwen3-rerank",
            "qwen3-rerank",
            "rerank",
            "tiny-qwen3-reranker",
            None,
        )?,
        |_| {},
    )
    .await?;
    let addr = server.addr;
    let r = gllm_testkit::read_json(
        &gllm_testkit::fixture("tiny-qwen3-reranker").join("reference.json"),
    )?;
    // The default instruction: the first query of the reference.
    let q = &r["queries"][0];
    ensure!(
        q["instruction"].is_null(),
        "the first query uses the default instruction"
    );
    let results = q["results"].as_array().context("results")?;
    let docs: Vec<&str> = results
        .iter()
        .filter_map(|x| x["document"].as_str())
        .collect();
    let reply = post(
        addr,
        "/v1/rerank",
        &json!({"query": q["query"], "documents": docs, "top_n": 2, "return_documents": true}),
    )
    .await?;
    ensure!(reply.status == 200, "{}", reply.text());
    let v = reply.json()?;
    let got = v["results"].as_array().context("results")?;
    ensure!(got.len() == 2, "top_n 2 gave {}", got.len());
    let mut want: Vec<(usize, f64)> = results
        .iter()
        .enumerate()
        .map(|(i, x)| (i, x["score"].as_f64().unwrap_or(f64::NAN)))
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (g, (i, score)) in got.iter().zip(&want) {
        ensure!(g["index"] == *i, "{g} should be document {i}");
        let s = g["relevance_score"].as_f64().context("relevance_score")?;
        ensure!((s - score).abs() <= 1e-5, "document {i}: {s} vs {score}");
        ensure!(g["document"]["text"] == docs[*i], "{g}");
    }
    let reply = post(
        addr,
        "/rerank",
        &json!({"query": q["query"], "texts": docs}),
    )
    .await?;
    ensure!(reply.status == 200, "{}", reply.text());
    for g in reply.json()?.as_array().context("TEI results")? {
        let i = g["index"].as_u64().context("index")? as usize;
        let s = g["score"].as_f64().context("score")?;
        let want = results[i]["score"].as_f64().unwrap_or(f64::NAN);
        ensure!((s - want).abs() <= 1e-5, "TEI document {i}: {s} vs {want}");
    }
    server.stop().await?;
    Ok(())
}
