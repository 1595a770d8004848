//! Bad input, overload, clients that go away, timeouts and graceful shutdown: each
//! gets its defined status and the server keeps serving.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request that must still work after whatever came before.
async fn still_serving(addr: std::net::SocketAddr) -> Result<()> {
    let r = get(addr, "/health").await?;
    ensure!(r.status == 200, "health: {}", r.text());
    let (text, want) = bert_cases().swap_remove(0);
    let r = post(addr, "/v1/embeddings", &json!({"input": text})).await?;
    ensure!(r.status == 200, "follow-up: {}", r.text());
    let got = floats(&r.json()?["data"][0]["embedding"]);
    ensure!(
        max_abs_diff(&got, &want) <= 1e-5,
        "follow-up embedding differs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_over_long_prompt_is_a_400_naming_both_lengths() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    // Longer than tiny-qwen2's context (32768 tokens): refused, not silently cut.
    let long = "word ".repeat(33_000);
    let e = post(
        server.addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": long}], "max_tokens": 1}),
    )
    .await?
    .expect_error(400)?;
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("tokens and the model's context 32768")),
        "{e}"
    );
    still_serving(server.addr).await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_their_status_and_the_server_keeps_serving() -> Result<()> {
    let limit = 64 * 1024;
    let server = TestServer::start(|o| o.body_limit = limit).await?;
    let addr = server.addr;

    // Malformed JSON.
    for path in [
        "/v1/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/rerank",
        "/rerank",
        "/embed",
    ] {
        let e = post_raw(addr, path, b"{\"input\": [\"a\",")
            .await?
            .expect_error(400)?;
        assert_eq!(e["type"], "invalid_request_error");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("malformed JSON")),
            "{path}: {e}"
        );
        post_raw(addr, path, b"").await?.expect_error(400)?;
        post_raw(addr, path, b"[1, 2]").await?.expect_error(400)?;
    }

    // Tools cannot come in through the template variables (they are refused as a field).
    let e = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}],
                "chat_template_kwargs": {"tools": [{"type": "function"}]}}),
    )
    .await?
    .expect_error(400)?;
    assert_eq!(e["param"], "chat_template_kwargs", "{e}");

    // Wrong types, naming the field.
    let e = post(addr, "/v1/embeddings", &json!({"input": 5}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "input");
    let e = post(addr, "/v1/embeddings", &json!({"input": "a", "model": 7}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "model");
    let e = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
    )
    .await?
    .expect_error(400)?;
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("temperature")),
        "{e}"
    );
    let e = post(addr, "/v1/rerank", &json!({"query": "q", "documents": "d"}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "documents");
    let e = post(addr, "/v1/embeddings", &json!({"model": "tiny-bert"}))
        .await?
        .expect_error(400)?;
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("input")),
        "{e}"
    );

    // Empty inputs.
    let e = post(addr, "/v1/embeddings", &json!({"input": []}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "input");
    let e = post(addr, "/embed", &json!({"inputs": []}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "inputs");
    let e = post(addr, "/v1/embeddings", &json!({"input": [[]]}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "input");
    let e = post(addr, "/v1/chat/completions", &json!({"messages": []}))
        .await?
        .expect_error(400)?;
    assert_eq!(e["param"], "messages");
    post(addr, "/v1/completions", &json!({"prompt": ""}))
        .await?
        .expect_error(400)?;

    // Invalid values.
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (field, value) in [
        ("temperature", json!(-1)),
        ("temperature", json!(2.5)),
        ("top_p", json!(0)),
        ("max_tokens", json!(0)),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-3)),
        ("n", json!(9)),
        ("top_logprobs", json!(21)),
    ] {
        let mut body = json!({"messages": msgs});
        body[field] = value;
        let e = post(addr, "/v1/chat/completions", &body)
            .await?
            .expect_error(400)?;
        assert_eq!(e["param"], field, "{e}");
    }
    let e = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "wizard", "content": "hi"}]}),
    )
    .await?
    .expect_error(400)?;
    assert_eq!(e["param"], "messages[0].role");
    let e = post(
        addr,
        "/v1/embeddings",
        &json!({"input": "a", "encoding_format": "int8"}),
    )
    .await?
    .expect_error(400)?;
    assert_eq!(e["param"], "encoding_format");
    // A token id outside the vocabulary is the backend's invalid input: 400.
    post(
        addr,
        "/v1/embeddings",
        &json!({"input": [101, 99999999, 102]}),
    )
    .await?
    .expect_error(400)?;

    // Unknown model: 404; a model of another task: 400.
    let e = post(
        addr,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "a"}),
    )
    .await?
    .expect_error(404)?;
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    let e = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "tiny-bert", "messages": msgs}),
    )
    .await?
    .expect_error(400)?;
    assert_eq!(e["code"], "wrong_task");
    post(
        addr,
        "/rerank",
        &json!({"model": "tiny-qwen2", "query": "q", "texts": ["a"]}),
    )
    .await?
    .expect_error(400)?;

    // Unknown route and wrong method.
    get(addr, "/v2/everything").await?.expect_error(404)?;
    get(addr, "/v1/embeddings").await?.expect_error(405)?;

    // Body over the limit: 413.
    let big = json!({"input": "word ".repeat(limit / 4)});
    let e = post(addr, "/v1/embeddings", &big)
        .await?
        .expect_error(413)?;
    assert_eq!(e["code"], "body_too_large");

    still_serving(addr).await?;
    server.stop().await
}

/// The bytes of an HTTP/1.1 `POST /v1/chat/completions` with `body`, for clients that
/// misbehave on the raw socket.
fn chat_request(body: &serde_json::Value) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(body)?;
    let mut out = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Waits (at most `within`) until a generation of tiny-qwen2 is running.
async fn until_generating(addr: std::net::SocketAddr, within: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    while metric_now(addr, "gllm_generations_active{model=\"tiny-qwen2\"}").await? != Some(1.0) {
        ensure!(started.elapsed() < within, "the generation never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Reads the response head and the first SSE event, then hangs up.
async fn start_stream_and_hang_up(
    addr: std::net::SocketAddr,
    body: &serde_json::Value,
) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&chat_request(body)?).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"content\"") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .context("no event in 30 s")??;
        ensure!(n > 0, "closed before any event");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    Ok(String::from_utf8_lossy(&seen).to_string())
}

/// A short greedy chat gives the reference's answer.
async fn greedy_chat_still_works(addr: std::net::SocketAddr) -> Result<()> {
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi there!"}], "temperature": 0, "max_tokens": 8}),
    )
    .await?;
    ensure!(r.status == 200, "chat: {}", r.text());
    ensure!(
        r.json()?["choices"][0]["message"]["content"] == chat_cases()[0].text.as_str(),
        "chat answer differs: {}",
        r.text()
    );
    Ok(())
}

/// A metric of the server's `/metrics`, or `None` while the series is absent.
async fn metric_now(addr: std::net::SocketAddr, series: &str) -> Result<Option<f64>> {
    Ok(metric(&get(addr, "/metrics").await?.text(), series))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_blocks_no_one_and_is_cut_off_by_the_timeout() -> Result<()> {
    let timeout = Duration::from_secs(3);
    let server = TestServer::start(|o| o.request_timeout = timeout).await?;
    let addr = server.addr;
    // A streaming client with a 4 KiB receive buffer that reads nothing for 10 s, asking
    // for 30000 tokens (about 240 bytes of SSE each). On loopback the server's send
    // buffers absorb the first few MB (about 2600 events in 3 s here), so whether its
    // stream is blocked on a full buffer or still producing when the deadline passes
    // depends on the machine; the blocked case alone is `pump`'s unit test in
    // handlers/generate.rs. Either way the deadline must end it.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut silent = socket.connect(addr).await?;
    let request = chat_request(&json!({
        "messages": [{"role": "user", "content": "Tell me everything."}],
        "temperature": 0, "max_tokens": 30000, "stream": true}))?;
    silent.write_all(&request).await?;
    let started = std::time::Instant::now();
    until_generating(addr, Duration::from_secs(5)).await?;
    // Meanwhile another client is served at once, embeddings and chat alike.
    still_serving(addr).await?;
    greedy_chat_still_works(addr).await?;
    assert!(
        started.elapsed() < timeout,
        "the other client waited for the silent one: {:?}",
        started.elapsed()
    );
    // The silent client's generation ends at its deadline although it still reads nothing.
    let timed_out = "gllm_generations_total{model=\"tiny-qwen2\",finish_reason=\"timeout\"}";
    loop {
        let text = get(addr, "/metrics").await?.text();
        let active = metric(&text, "gllm_generations_active{model=\"tiny-qwen2\"}");
        if metric(&text, timed_out) == Some(1.0) && active == Some(0.0) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the generation of a client that reads nothing was not cut off by the {timeout:?} timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    // It did get some of its answer (and far from all 30000 tokens) before it stalled.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(500), silent.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    let events = text.matches("\"content\"").count();
    assert!(events > 0 && events < 30000, "{events} content events");
    still_serving(addr).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_mid_stream_cancels_its_generation() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let body = json!({"messages": [{"role": "user", "content": "Tell me everything."}],
                      "temperature": 0, "max_tokens": 20000, "stream": true});
    let seen = start_stream_and_hang_up(addr, &body).await?;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");

    // The generation stops (its slot and KV cache are freed) well before 20000 tokens.
    let started = std::time::Instant::now();
    loop {
        let text = get(addr, "/metrics").await?.text();
        let cancelled = metric(
            &text,
            "gllm_generations_total{model=\"tiny-qwen2\",finish_reason=\"cancelled\"}",
        );
        let active = metric(&text, "gllm_generations_active{model=\"tiny-qwen2\"}");
        if cancelled == Some(1.0) && active == Some(0.0) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "generation not cancelled: {cancelled:?} {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serving(addr).await?;
    // And generation still works.
    greedy_chat_still_works(addr).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_the_server_stays_healthy() -> Result<()> {
    let server = TestServer::start(|o| {
        o.max_queue = 1;
        o.max_concurrent_generations = 1;
    })
    .await?;
    let addr = server.addr;
    let long_text = "A fairly long sentence about nothing in particular, repeated. ".repeat(20);
    let mut tasks = Vec::new();
    for i in 0..48 {
        let text = long_text.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 2 {
                post(
                    addr,
                    "/v1/chat/completions",
                    &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 64}),
                )
                .await
            } else {
                post(addr, "/v1/embeddings", &json!({"input": [text.clone(), text]})).await
            }
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let r = t.await??;
        match r.status {
            200 => ok += 1,
            429 => {
                let e = r.expect_error(429)?;
                assert_eq!(e["code"], "queue_full");
                assert_eq!(e["type"], "rate_limit_error");
                limited += 1;
            }
            s => anyhow::bail!("unexpected status {s}: {}", r.text()),
        }
    }
    assert!(ok >= 2, "some requests are served ({ok})");
    assert!(limited >= 1, "some requests are refused ({limited} of 48)");
    let text = get(addr, "/metrics").await?.text();
    let refused = metric(
        &text,
        "gllm_requests_total{endpoint=\"/v1/embeddings\",model=\"tiny-bert\",status=\"429\"}",
    )
    .unwrap_or(0.0)
        + metric(
            &text,
            "gllm_requests_total{endpoint=\"/v1/chat/completions\",model=\"tiny-qwen2\",status=\"429\"}",
        )
        .unwrap_or(0.0);
    assert_eq!(refused as usize, limited);
    still_serving(addr).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_past_the_timeout_get_504_and_streams_end_with_an_error() -> Result<()> {
    let server = TestServer::start(|o| o.request_timeout = Duration::from_millis(300)).await?;
    let addr = server.addr;
    let msgs = json!([{"role": "user", "content": "Go on."}]);
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": msgs, "temperature": 0, "max_tokens": 30000}),
    )
    .await?;
    let e = r.expect_error(504)?;
    assert_eq!(e["code"], "timeout");
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": msgs, "temperature": 0, "max_tokens": 30000, "stream": true}),
    )
    .await?;
    assert_eq!(r.status, 200);
    let events = r.sse_data();
    let last = events.last().context("events")?;
    let v: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(v["error"]["code"], "timeout", "{last}");
    still_serving(addr).await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_requests_in_flight() -> Result<()> {
    let mut server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let case = chat_cases().swap_remove(0);
    let body = json!({"messages": case.messages, "chat_template_kwargs": case.kwargs, "temperature": 0, "max_tokens": 1500, "stream": true});
    let stream = tokio::spawn(async move { post(addr, "/v1/chat/completions", &body).await });
    // Wait until the generation runs, then ask the server to stop.
    until_generating(addr, Duration::from_secs(20)).await?;
    server.begin_stop();
    let r = stream.await??;
    assert_eq!(r.status, 200);
    let (text, _, chunks) = chat_stream_text(&r.sse_data())?;
    assert!(text.starts_with(&case.text), "the whole answer arrives");
    let finish = &chunks.last().context("chunks")?["choices"][0]["finish_reason"];
    assert!(finish == "length" || finish == "stop", "{finish}");
    server.join().await?;
    // Gone: new connections are refused.
    assert!(get(addr, "/health").await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_that_fails_to_load_stops_the_server_with_its_error() -> Result<()> {
    // A BERT directory declared as a Qwen2 generator: no backend can load it.
    let manifest = one_model_manifest(
        "broken",
        "broken",
        "generate",
        "tiny-bert",
        Some("candle-qwen2"),
    )?;
    gllm::link_builtin_backends();
    let runtime = gllm_runtime::Runtime::from_manifest_file(&manifest)?;
    let options = gllm_server::ServeOptions {
        addr: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let server = gllm_server::Server::bind(runtime, options).await?;
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        server.run(std::future::pending::<()>()),
    )
    .await
    .context("the server kept running")?;
    match result {
        Err(gllm_server::ServerError::Load { id, .. }) => assert_eq!(id, "broken"),
        other => anyhow::bail!("expected a load error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_input_fails_only_its_own_request_in_a_shared_batch() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    let reference = reference("tiny-bert");
    let cases = std::sync::Arc::new(bert_cases());
    let ids = std::sync::Arc::new(reference["input_ids"].clone());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for k in 0..32usize {
        let (cases, ids, barrier) = (cases.clone(), ids.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let i = k % cases.len();
            if k % 4 == 3 {
                // Token ids outside the vocabulary: this request alone must fail.
                let r = post(
                    addr,
                    "/v1/embeddings",
                    &json!({"input": [101, 4_000_000, 102]}),
                )
                .await?;
                r.expect_error(400)?;
            } else {
                let r = post(addr, "/v1/embeddings", &json!({"input": [ids[i].clone()]})).await?;
                ensure!(r.status == 200, "{}", r.text());
                let got = floats(&r.json()?["data"][0]["embedding"]);
                ensure!(
                    max_abs_diff(&got, &cases[i].1) <= 1e-5,
                    "request {k} differs"
                );
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let text = get(addr, "/metrics").await?.text();
    println!(
        "largest batch: {:?}",
        metric(&text, "gllm_batch_requests_max{model=\"tiny-bert\"}")
    );
    still_serving(addr).await?;
    server.stop().await
}

/// Opens `n` connections that send nothing (or, with `partial`, half a request line).
async fn idle_connections(
    addr: std::net::SocketAddr,
    n: usize,
    partial: bool,
) -> Result<Vec<tokio::net::TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        if partial {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await?;
        }
        out.push(s);
    }
    Ok(out)
}

/// True once the server has closed the connection (EOF or reset) within `within`.
async fn closed_by_server(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // hyper may answer 408 before closing: keep reading to the end.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_block_no_one_and_are_closed_by_the_header_timeout() -> Result<()> {
    let server = TestServer::start(|o| o.header_timeout = Duration::from_secs(1)).await?;
    let mut idle = idle_connections(server.addr, 200, false).await?;
    idle.extend(idle_connections(server.addr, 20, true).await?);
    // A new client is served at once.
    let started = std::time::Instant::now();
    let r = get(server.addr, "/health").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Every idle or trickling connection is closed once the timeout passes.
    let mut closed = 0;
    for s in &mut idle {
        if closed_by_server(s, Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        idle.len(),
        "connections closed by the header timeout"
    );
    let r = get(server.addr, "/health").await?;
    assert_eq!(r.status, 200);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_wait_for_a_free_one() -> Result<()> {
    let server = TestServer::start(|o| {
        o.max_connections = 2;
        o.header_timeout = Duration::from_secs(1);
    })
    .await?;
    // Two silent connections hold both places; the next client waits until the
    // header timeout frees one, then is served.
    let _idle = idle_connections(server.addr, 2, false).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), get(server.addr, "/health"))
        .await
        .context("the waiting client was never served")??;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served before a place was free: {:?}",
        started.elapsed()
    );
    server.stop().await
}

/// Resident memory of this process (the in-process server), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_connect_send_close_requests_leave_the_server_healthy() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let addr = server.addr;
    // A long prompt (about 1500 tokens: three prefill chunks), sent and abandoned at once.
    let request = chat_request(&json!({
        "messages": [{"role": "user", "content": "word ".repeat(1500)}],
        "max_tokens": 2000, "stream": true}))?;
    // Warm up (allocator pools, the step batcher) before the baseline.
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&request).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&request).await?;
        drop(s);
    }
    // Every generation stops: none left running, the queue empty.
    let started = std::time::Instant::now();
    loop {
        let text = get(addr, "/metrics").await?.text();
        let active = metric(&text, "gllm_generations_active{model=\"tiny-qwen2\"}");
        let waiting = metric(&text, "gllm_queue_depth{model=\"tiny-qwen2\"}");
        if active == Some(0.0) && waiting == Some(0.0) {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "generations still running: {active:?}, waiting {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss();
    println!(
        "RSS before {:.0} MiB, after 1000 abandoned requests {:.0} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    ensure!(
        after < before + 256 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes"
    );
    still_serving(addr).await?;
    server.stop().await
}
