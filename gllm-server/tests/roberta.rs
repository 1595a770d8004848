//! The RoBERTa family over HTTP: tiny-roberta through `/v1/embeddings` and TEI's
//! `/embed`, tiny-xlm-roberta-reranker through `/v1/rerank` and TEI's `/rerank`,
//! against sentence-transformers' numbers (the 512-token cut of a long document included).

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use support::*;

/// Embeddings and logits against float32 sentence-transformers.
const TOL: f32 = 1e-5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roberta_embeddings_over_http() -> Result<()> {
    let manifest = one_model_manifest("roberta", "roberta", "embed", "tiny-roberta", None)?;
    let server = TestServer::start_with(&manifest, |_| {}).await?;
    let addr = server.addr;
    let r = gllm_testkit::read_json(&gllm_testkit::fixture("tiny-roberta").join("reference.json"))?;
    let want = float_rows(&r["embeddings"]);
    let reply = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "roberta", "input": r["sentences"]}),
    )
    .await?;
    ensure!(reply.status == 200, "{}", reply.text());
    let v = reply.json()?;
    let data = v["data"].as_array().context("data")?;
    ensure!(data.len() == want.len(), "{} rows", data.len());
    for (i, (row, w)) in data.iter().zip(&want).enumerate() {
        let d = max_abs_diff(&floats(&row["embedding"]), w);
        ensure!(d <= TOL, "sentence {i}: max |diff| {d}");
    }
    let tokens: usize = r["input_ids"]
        .as_array()
        .context("input_ids")?
        .iter()
        .filter_map(|ids| ids.as_array().map(Vec::len))
        .sum();
    ensure!(
        v["usage"]["prompt_tokens"] == tokens,
        "usage {} vs {tokens} reference tokens",
        v["usage"]
    );
    let reply = post(addr, "/embed", &json!({"inputs": r["sentences"]})).await?;
    ensure!(reply.status == 200, "{}", reply.text());
    for (i, (got, w)) in float_rows(&reply.json()?).iter().zip(&want).enumerate() {
        let d = max_abs_diff(got, w);
        ensure!(d <= TOL, "TEI sentence {i}: max |diff| {d}");
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xlm_roberta_rerank_over_http() -> Result<()> {
    let manifest = one_model_manifest("xlmr", "xlmr", "rerank", "tiny-xlm-roberta-reranker", None)?;
    let server = TestServer::start_with(&manifest, |_| {}).await?;
    let addr = server.addr;
    let r = gllm_testkit::read_json(
        &gllm_testkit::fixture("tiny-xlm-roberta-reranker").join("reference.json"),
    )?;
    for (qi, q) in r["queries"]
        .as_array()
        .context("queries")?
        .iter()
        .enumerate()
    {
        let logits = floats(&q["logits"]);
        let scores = floats(&q["scores_sigmoid"]);
        let reply = post(
            addr,
            "/v1/rerank",
            &json!({"model": "xlmr", "query": q["query"], "documents": q["documents"]}),
        )
        .await?;
        ensure!(reply.status == 200, "{}", reply.text());
        let v = reply.json()?;
        let results = v["results"].as_array().context("results")?;
        ensure!(results.len() == scores.len(), "{} results", results.len());
        for g in results {
            let i = g["index"].as_u64().context("index")? as usize;
            let s = g["relevance_score"].as_f64().context("relevance_score")? as f32;
            ensure!(
                (s - scores[i]).abs() <= 1e-6,
                "query {qi} document {i}: {s} vs {}",
                scores[i]
            );
        }
        let reply = post(
            addr,
            "/rerank",
            &json!({"query": q["query"], "texts": q["documents"], "raw_scores": true}),
        )
        .await?;
        ensure!(reply.status == 200, "{}", reply.text());
        for g in reply.json()?.as_array().context("TEI results")? {
            let i = g["index"].as_u64().context("index")? as usize;
            let s = g["score"].as_f64().context("score")? as f32;
            ensure!(
                (s - logits[i]).abs() <= TOL,
                "TEI query {qi} document {i}: raw score {s} vs logit {}",
                logits[i]
            );
        }
    }
    server.stop().await?;
    Ok(())
}
