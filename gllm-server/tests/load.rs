//! Load: 64 concurrent clients on loopback, a fixed number of requests mixing
//! embeddings, rerank and streamed chat. Zero errors, every answer correct, and
//! concurrent embedding requests share batches.

mod support;

use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use support::*;

const CLIENTS: usize = 64;
const REQUESTS_PER_CLIENT: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_mixing_embed_rerank_and_streamed_chat() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let bert = Arc::new(bert_cases());
    let rerank = Arc::new(rerank_cases());
    let chat = Arc::new(chat_cases());
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (bert, rerank, chat, barrier) =
            (bert.clone(), rerank.clone(), chat.clone(), barrier.clone());
        clients.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = [0usize; 3];
            for r in 0..REQUESTS_PER_CLIENT {
                let k = c * REQUESTS_PER_CLIENT + r;
                match k % 4 {
                    // Embeddings (half the traffic): one or two sentences.
                    0 | 2 => {
                        let i = k % bert.len();
                        let j = (k / 7) % bert.len();
                        let resp = post(
                            addr,
                            "/v1/embeddings",
                            &json!({"model": "tiny-bert", "input": [bert[i].0, bert[j].0]}),
                        )
                        .await?;
                        ensure!(resp.status == 200, "embed: {}", resp.text());
                        let v = resp.json()?;
                        for (row, idx) in v["data"].as_array().context("data")?.iter().zip([i, j]) {
                            let d = max_abs_diff(&floats(&row["embedding"]), &bert[idx].1);
                            ensure!(d <= 1e-5, "client {c}: embedding {idx} off by {d}");
                        }
                        done[0] += 1;
                    }
                    1 => {
                        let case = &rerank[k % rerank.len()];
                        let resp = post(
                            addr,
                            "/rerank",
                            &json!({"query": case.query, "texts": case.documents, "raw_scores": true}),
                        )
                        .await?;
                        ensure!(resp.status == 200, "rerank: {}", resp.text());
                        let v = resp.json()?;
                        let results = v.as_array().context("results")?;
                        ensure!(results.len() == case.documents.len());
                        for res in results {
                            let i = res["index"].as_u64().context("index")? as usize;
                            let s = res["score"].as_f64().context("score")? as f32;
                            ensure!((s - case.logits[i]).abs() <= 1e-5, "client {c}: logit {i}");
                        }
                        done[1] += 1;
                    }
                    _ => {
                        let case = &chat[k % chat.len()];
                        let resp = post(
                            addr,
                            "/v1/chat/completions",
                            &json!({"messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 0,
                                    "max_tokens": 8, "stream": true}),
                        )
                        .await?;
                        ensure!(resp.status == 200, "chat: {}", resp.text());
                        let (text, _, _) = chat_stream_text(&resp.sse_data())?;
                        ensure!(text == case.text, "client {c}: chat text {text:?}");
                        done[2] += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut totals = [0usize; 3];
    let mut errors = Vec::new();
    for c in clients {
        match c.await? {
            Ok(d) => (0..3).for_each(|i| totals[i] += d[i]),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{} clients failed, first: {}", errors.len(), errors[0]);
    }
    assert_eq!(totals.iter().sum::<usize>(), CLIENTS * REQUESTS_PER_CLIENT);
    println!(
        "embed {} rerank {} chat {}",
        totals[0], totals[1], totals[2]
    );

    let text = get(addr, "/metrics").await?.text();
    let max_batch = metric(&text, "gllm_batch_requests_max{model=\"tiny-bert\"}").unwrap_or(0.0);
    println!("largest embedding batch: {max_batch} requests");
    assert!(
        max_batch > 1.0,
        "concurrent embedding requests share batches"
    );
    let single = metric(
        &text,
        "gllm_batch_requests_bucket{model=\"tiny-bert\",le=\"1\"}",
    )
    .unwrap_or(0.0);
    let batches = metric(&text, "gllm_batch_requests_count{model=\"tiny-bert\"}").unwrap_or(0.0);
    assert!(batches > single, "some batch holds more than one request");
    let embed_ok = metric(
        &text,
        "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",status=\"200\"}",
    );
    assert_eq!(embed_ok, Some(totals[0] as f64));
    assert_eq!(
        metric(&text, "gllm_generated_tokens_total{model=\"tiny-qwen2\"}"),
        Some((totals[2] * 8) as f64)
    );
    let decode_batches =
        metric(&text, "gllm_decode_batches_total{model=\"tiny-qwen2\"}").unwrap_or(0.0);
    let decode_steps = metric(
        &text,
        "gllm_decode_batched_steps_total{model=\"tiny-qwen2\"}",
    )
    .unwrap_or(0.0);
    println!("decode: {decode_steps} steps in {decode_batches} batches");
    assert!(
        decode_steps > decode_batches,
        "concurrent chats share decode batches ({decode_steps} steps in {decode_batches})"
    );
    assert_eq!(
        metric(&text, "gllm_queue_depth{model=\"tiny-bert\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "gllm_requests_in_flight"),
        Some(1.0),
        "only the scrape itself"
    );
    server.stop().await
}
