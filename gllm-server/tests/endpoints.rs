//! Every endpoint against the fixtures' reference numbers, over real HTTP on
//! 127.0.0.1 with the server running in-process.

mod support;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use serde_json::{Value, json};
use support::*;

const TOL: f32 = 1e-5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_match_the_reference() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let cases = bert_cases();
    let reference = reference("tiny-bert");
    let texts: Vec<&str> = cases.iter().map(|(s, _)| s.as_str()).collect();

    // An array of strings, floats.
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "tiny-bert", "input": texts}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    let v = r.json()?;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "tiny-bert");
    let data = v["data"].as_array().context("data")?;
    assert_eq!(data.len(), cases.len());
    for (i, (row, (text, expected))) in data.iter().zip(&cases).enumerate() {
        assert_eq!(row["object"], "embedding");
        assert_eq!(row["index"], i);
        let got = floats(&row["embedding"]);
        let d = max_abs_diff(&got, expected);
        assert!(d <= TOL, "sentence {i} {text:?}: max |diff| {d}");
    }
    let tokens: usize = reference["input_ids"]
        .as_array()
        .context("input_ids")?
        .iter()
        .map(|ids| ids.as_array().map(Vec::len).unwrap_or(0))
        .sum();
    assert_eq!(v["usage"]["prompt_tokens"], tokens);
    assert_eq!(v["usage"]["total_tokens"], tokens);

    // A single string, base64 (little-endian f32).
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "tiny-bert", "input": texts[2], "encoding_format": "base64"}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    let v = r.json()?;
    let b64 = v["data"][0]["embedding"]
        .as_str()
        .context("base64 string")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let got: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(max_abs_diff(&got, &cases[2].1) <= TOL);

    // dimensions: the first 16 values, renormalized.
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "tiny-bert", "input": [texts[0], texts[6]], "dimensions": 16}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    let v = r.json()?;
    for (row, idx) in v["data"].as_array().context("data")?.iter().zip([0, 6]) {
        let mut want = cases[idx].1[..16].to_vec();
        let n = want.iter().map(|x| x * x).sum::<f32>().sqrt();
        want.iter_mut().for_each(|x| *x /= n);
        let got = floats(&row["embedding"]);
        assert_eq!(got.len(), 16);
        assert!(max_abs_diff(&got, &want) <= TOL);
    }
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "tiny-bert", "input": "x", "dimensions": 33}),
    )
    .await?;
    assert_eq!(r.expect_error(400)?["param"], "dimensions");

    // Token ids as input: the reference ids give the reference vector.
    let ids = reference["input_ids"][4].clone();
    let r = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "tiny-bert", "input": ids}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    let got = floats(&r.json()?["data"][0]["embedding"]);
    assert!(max_abs_diff(&got, &cases[4].1) <= TOL);

    // TEI /embed, model optional (the only embedder).
    let r = post(addr, "/embed", &json!({"inputs": texts})).await?;
    ensure!(r.status == 200, "{}", r.text());
    let rows = r.json()?;
    let rows = rows.as_array().context("[[f32]]")?;
    assert_eq!(rows.len(), cases.len());
    for (row, (_, expected)) in rows.iter().zip(&cases) {
        assert!(max_abs_diff(&floats(row), expected) <= TOL);
    }
    let r = post(
        addr,
        "/embed",
        &json!({"inputs": texts[1], "normalize": false}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    assert!(max_abs_diff(&floats(&r.json()?[0]), &cases[1].1) <= TOL);

    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerank_matches_the_reference() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    for case in rerank_cases() {
        let n = case.documents.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| case.scores[b].total_cmp(&case.scores[a]));

        // Cohere/Jina shape, every document, with the texts.
        let r = post(
            addr,
            "/v1/rerank",
            &json!({"model": "tiny-cross-encoder", "query": case.query,
                    "documents": case.documents, "return_documents": true}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        assert_eq!(v["model"], "tiny-cross-encoder");
        let results = v["results"].as_array().context("results")?;
        assert_eq!(results.len(), n);
        for (res, &want) in results.iter().zip(&order) {
            let i = res["index"].as_u64().context("index")? as usize;
            assert_eq!(i, want, "order by score");
            let s = res["relevance_score"].as_f64().context("score")? as f32;
            assert!(
                (s - case.scores[i]).abs() <= TOL,
                "{s} vs {}",
                case.scores[i]
            );
            assert_eq!(res["document"]["text"], case.documents[i]);
        }

        // top_n, documents as objects, no texts.
        let docs: Vec<Value> = case.documents.iter().map(|d| json!({"text": d})).collect();
        let r = post(
            addr,
            "/v1/rerank",
            &json!({"query": case.query, "documents": docs, "top_n": 2}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        let results = v["results"].as_array().context("results")?;
        assert_eq!(results.len(), 2.min(n));
        assert_eq!(results[0]["index"], order[0]);
        assert!(results[0].get("document").is_none());

        // TEI: raw scores are the logits.
        let r = post(
            addr,
            "/rerank",
            &json!({"query": case.query, "texts": case.documents, "raw_scores": true, "return_text": true}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        let results = v.as_array().context("TEI results")?;
        assert_eq!(results.len(), n);
        for (res, &want) in results.iter().zip(&order) {
            let i = res["index"].as_u64().context("index")? as usize;
            assert_eq!(i, want);
            let s = res["score"].as_f64().context("score")? as f32;
            assert!(
                (s - case.logits[i]).abs() <= TOL,
                "{s} vs {}",
                case.logits[i]
            );
            assert_eq!(res["text"], case.documents[i]);
        }
        let r = post(
            addr,
            "/rerank",
            &json!({"query": case.query, "texts": case.documents}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        for res in v.as_array().context("TEI results")? {
            let i = res["index"].as_u64().context("index")? as usize;
            let s = res["score"].as_f64().context("score")? as f32;
            assert!((s - case.scores[i]).abs() <= TOL);
            assert!(res.get("text").is_none());
        }
    }
    // No documents: no results.
    let r = post(addr, "/v1/rerank", &json!({"query": "q", "documents": []})).await?;
    ensure!(r.status == 200, "{}", r.text());
    assert_eq!(r.json()?["results"], json!([]));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_chat_completions_match_the_reference() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let cases = chat_cases();
    assert!(cases.len() >= 2, "the fixture has chat cases");
    for case in &cases {
        // Whole answer.
        let r = post(
            addr,
            "/v1/chat/completions",
            &json!({"model": "tiny-qwen2", "messages": case.messages, "chat_template_kwargs": case.kwargs,
                    "temperature": 0, "max_tokens": 8}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "tiny-qwen2");
        assert!(v["id"].as_str().is_some_and(|s| s.starts_with("chatcmpl-")));
        let choice = &v["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], case.text.as_str());
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], case.greedy_ids.len());
        assert_eq!(v["usage"]["prompt_tokens"], case.prompt_tokens);
        assert_eq!(
            v["usage"]["total_tokens"],
            case.prompt_tokens + case.greedy_ids.len()
        );

        // Streamed, with max_completion_tokens and usage at the end.
        let r = post(
            addr,
            "/v1/chat/completions",
            &json!({"model": "tiny-qwen2", "messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 0,
                    "max_completion_tokens": 8, "stream": true,
                    "stream_options": {"include_usage": true}}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/event-stream")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("x-accel-buffering"), Some("no"));
        let events = r.sse_data();
        let (text, usage, chunks) = chat_stream_text(&events)?;
        assert_eq!(text, case.text);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        let usage = usage.context("usage chunk")?;
        assert_eq!(usage["completion_tokens"], case.greedy_ids.len());
        assert_eq!(usage["prompt_tokens"], case.prompt_tokens);
        let last = chunks.last().context("chunks")?;
        assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
        let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
        assert_eq!(finish, "length");
        // Without include_usage no chunk carries usage.
        let r = post(
            addr,
            "/v1/chat/completions",
            &json!({"messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 0, "max_tokens": 8, "stream": true}),
        )
        .await?;
        let (text, usage, chunks) = chat_stream_text(&r.sse_data())?;
        assert_eq!(text, case.text);
        assert!(usage.is_none());
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    // A stop string cuts the text before it and ends with finish_reason "stop".
    let case = &cases[0];
    let cut = case
        .text
        .char_indices()
        .nth(4)
        .map(|(i, _)| i)
        .context("text")?;
    let stop: String = case.text[cut..].chars().take(3).collect();
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 0, "max_tokens": 8, "stop": [stop]}),
    )
    .await?;
    ensure!(r.status == 200, "{}", r.text());
    let v = r.json()?;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .context("content")?;
    assert!(
        case.text.starts_with(text) && text.len() <= cut,
        "{text:?} vs {:?}",
        case.text
    );
    assert!(!text.contains(&stop));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // The same seed gives the same sample; penalties are accepted.
    let body = json!({"messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 1.0, "top_p": 0.9, "seed": 1234,
                      "max_tokens": 12, "presence_penalty": 0.5, "frequency_penalty": 0.5});
    let a = post(addr, "/v1/chat/completions", &body).await?.json()?;
    let b = post(addr, "/v1/chat/completions", &body).await?.json()?;
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_eq!(a["usage"]["completion_tokens"], 12);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_completions_match_the_reference() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let reference = reference("tiny-qwen2");
    for case in reference["cases"].as_array().context("cases")? {
        let prompt = case["prompt"].as_str().context("prompt")?;
        let want = case["greedy_text"].as_str().context("greedy_text")?;
        let n_new = case["greedy_new_ids"].as_array().context("ids")?.len();
        let n_prompt = case["input_ids"].as_array().context("ids")?.len();
        let r = post(
            addr,
            "/v1/completions",
            &json!({"model": "tiny-qwen2", "prompt": prompt, "temperature": 0, "max_tokens": n_new}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let v = r.json()?;
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], want);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], n_new);
        assert_eq!(v["usage"]["prompt_tokens"], n_prompt);

        let r = post(
            addr,
            "/v1/completions",
            &json!({"prompt": [prompt], "temperature": 0, "max_tokens": n_new, "stream": true, "echo": true}),
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        let (text, _, _) = chat_stream_text(&r.sse_data())?;
        assert_eq!(text, format!("{prompt}{want}"));
    }
    // OpenAI's default of 16 tokens.
    let r = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "Hello", "temperature": 0}),
    )
    .await?;
    assert_eq!(r.json()?["usage"]["completion_tokens"], 16);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_health_metrics_and_api_key() -> Result<()> {
    let key = "test-key-123";
    let server = TestServer::start(|o| o.api_key = Some(key.into())).await?;
    let addr = server.addr;

    // /health needs no key and lists where each model runs.
    let r = get(addr, "/health").await?;
    assert_eq!(r.status, 200);
    let v = r.json()?;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["models"].as_array().map(Vec::len), Some(3));

    // Everything else does.
    for path in ["/v1/models", "/metrics", "/v1/models/tiny-bert"] {
        let e = get(addr, path).await?.expect_error(401)?;
        assert_eq!(e["code"], "invalid_api_key");
        let e = get_auth(addr, path, "wrong").await?.expect_error(401)?;
        assert_eq!(e["code"], "invalid_api_key");
    }
    let r = post(addr, "/v1/embeddings", &json!({"input": "hi"})).await?;
    r.expect_error(401)?;
    let body = serde_json::to_vec(&json!({"input": "hi"}))?;
    let auth = format!("Bearer {key}");
    let r = request(
        addr,
        "POST",
        "/v1/embeddings",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = get_auth(addr, "/v1/models", key).await?;
    assert_eq!(r.status, 200);
    let v = r.json()?;
    assert_eq!(v["object"], "list");
    let models: Vec<(String, String)> = v["data"]
        .as_array()
        .context("data")?
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or("").to_string(),
                m["task"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        models,
        vec![
            ("tiny-bert".to_string(), "embed".to_string()),
            ("tiny-cross-encoder".to_string(), "rerank".to_string()),
            ("tiny-qwen2".to_string(), "generate".to_string()),
        ]
    );
    for m in v["data"].as_array().context("data")? {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "gllm");
        assert_eq!(m["device"], "cpu");
    }
    let r = get_auth(addr, "/v1/models/tiny-qwen2", key).await?;
    assert_eq!(r.json()?["backend"], "candle-qwen2");
    get_auth(addr, "/v1/models/nope", key)
        .await?
        .expect_error(404)?;

    let r = get_auth(addr, "/metrics", key).await?;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = r.text();
    assert_eq!(metric(&text, "gllm_ready"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "gllm_model_info{model=\"tiny-bert\",task=\"embed\",backend=\"burn-bert\",device=\"cpu\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "gllm_model_info{model=\"tiny-qwen2\",task=\"generate\",backend=\"candle-qwen2\",device=\"cpu\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "gllm_model_fallbacks_total{model=\"tiny-bert\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",status=\"200\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"\",status=\"401\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "gllm_request_duration_seconds_count{endpoint=\"/v1/embeddings\",model=\"tiny-bert\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "gllm_embedded_inputs_total{model=\"tiny-bert\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "gllm_queue_depth{model=\"tiny-bert\"}"),
        Some(0.0)
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_routes_answer_in_process_as_over_a_socket() -> Result<()> {
    gllm::link_builtin_backends();
    let runtime = gllm_runtime::Runtime::from_manifest_file(&write_manifest())?;
    let server = gllm_server::InProcess::load(runtime, Default::default()).await?;
    // Every model is loaded before `load` returns: no 503 phase.
    let health = server.request("GET", "/health", Vec::new()).await?;
    assert_eq!(
        health.status,
        200,
        "{}",
        String::from_utf8_lossy(&health.body)
    );
    let (text, want) = bert_cases().swap_remove(0);
    let body = serde_json::to_vec(&json!({"input": text}))?;
    let r = server.request("POST", "/v1/embeddings", body).await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    let got = floats(&v["data"][0]["embedding"]);
    assert!(max_abs_diff(&got, &want) <= 1e-5, "embedding differs");
    // A streamed chat is read to its end: the reference's greedy text, then [DONE].
    let case = chat_cases().swap_remove(0);
    let body = serde_json::to_vec(
        &json!({"messages": case.messages, "chat_template_kwargs": case.kwargs,
        "temperature": 0, "max_tokens": case.greedy_ids.len(), "stream": true}),
    )?;
    let r = server.request("POST", "/v1/chat/completions", body).await?;
    assert_eq!(r.status, 200);
    let (streamed, _, _) = chat_stream_text(&sse_data(&String::from_utf8(r.body)?))?;
    assert_eq!(streamed, case.text);
    // Errors keep their status and shape.
    let e = server
        .request("POST", "/v1/embeddings", b"{".to_vec())
        .await?;
    assert_eq!(e.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&e.body)?;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    Ok(())
}
