//! The OpenAI features an agent or app needs, over HTTP on tiny-qwen2: `n` answers,
//! logprobs, structured outputs, forced tool calls (whole and streamed), the
//! tokenize endpoints against the fixture's ids, and every bad input of these
//! fields answered 400 naming the field, the server serving on afterwards.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use support::*;

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"],
                "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 12}},
                "required": ["timezone"], "additionalProperties": false}}}
    ])
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

async fn chat(server: &TestServer, body: Value) -> Result<Value> {
    let r = post(server.addr, "/v1/chat/completions", &body).await?;
    ensure!(r.status == 200, "{}: {}", r.status, r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_fields_are_400_naming_them_and_the_server_serves_on() -> Result<()> {
    let server = TestServer::start(|o| o.max_choices = 4).await?;
    let base = |extra: Value| {
        let mut b = json!({"model": "tiny-qwen2", "messages": user("hi"), "max_tokens": 2});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": 5}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "launch"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": "maybe"}),
            "tool_choice",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"type": "frobnicate"}}}}}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (json!({"n": 5}), "n"),
        (json!({"n": 0}), "n"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
    ];
    for (extra, param) in cases {
        let r = post(server.addr, "/v1/chat/completions", &base(extra.clone())).await?;
        ensure!(r.status == 400, "{extra}: {} {}", r.status, r.text());
        let body = r.json()?;
        ensure!(
            body["error"]["param"] == param,
            "{extra}: param {} (want {param}): {body}",
            body["error"]["param"]
        );
    }
    let r = post(
        server.addr,
        "/v1/completions",
        &json!({"model": "tiny-qwen2", "prompt": "x", "logprobs": 21}),
    )
    .await?;
    ensure!(r.status == 400, "{}", r.text());
    // Still serving.
    let ok = chat(&server, base(json!({}))).await?;
    ensure!(ok["choices"][0]["message"]["content"].is_string(), "{ok}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_answers_and_logprobs() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let ask = |n: usize, seed: u64, stream: bool| {
        json!({"model": "tiny-qwen2", "messages": user("Hello"), "max_tokens": 6, "temperature": 1,
            "seed": seed, "n": n, "logprobs": true, "top_logprobs": 3, "stream": stream})
    };
    let many = chat(&server, ask(3, 5, false)).await?;
    let choices = many["choices"].as_array().context("choices")?;
    ensure!(choices.len() == 3, "{many}");
    let mut completion_tokens = 0;
    for (i, c) in choices.iter().enumerate() {
        ensure!(c["index"] == i, "{c}");
        let alone = chat(&server, ask(1, 5 + i as u64, false)).await?;
        ensure!(
            c["message"]["content"] == alone["choices"][0]["message"]["content"],
            "answer {i}: {c} vs {alone}"
        );
        let entries = c["logprobs"]["content"].as_array().context("logprobs")?;
        ensure!(!entries.is_empty(), "{c}");
        completion_tokens += entries.len();
        let text: Vec<u8> = entries
            .iter()
            .flat_map(|e| floats(&e["bytes"]).into_iter().map(|b| b as u8))
            .collect();
        ensure!(
            String::from_utf8_lossy(&text) == c["message"]["content"].as_str().unwrap_or_default(),
            "the tokens' bytes make up the text: {c}"
        );
        for e in entries {
            let top = e["top_logprobs"].as_array().context("top")?;
            ensure!(top.len() == 3, "{e}");
            let lp = e["logprob"].as_f64().context("logprob")?;
            ensure!(
                lp <= 0.0 && lp >= top[2]["logprob"].as_f64().unwrap_or(0.0) - 50.0,
                "{e}"
            );
        }
    }
    ensure!(
        many["usage"]["completion_tokens"] == completion_tokens,
        "{}",
        many["usage"]
    );

    // Greedy: the most likely alternative at each step is the token taken.
    let greedy = chat(
        &server,
        json!({"model": "tiny-qwen2", "messages": user("Hello"), "max_tokens": 6, "temperature": 0,
            "logprobs": true, "top_logprobs": 1}),
    )
    .await?;
    for e in greedy["choices"][0]["logprobs"]["content"]
        .as_array()
        .context("logprobs")?
    {
        ensure!(e["top_logprobs"][0]["token"] == e["token"], "{e}");
        ensure!(e["top_logprobs"][0]["logprob"] == e["logprob"], "{e}");
    }

    // Streamed: both answers' pieces, by index, make up the whole answers.
    let r = post(server.addr, "/v1/chat/completions", &ask(2, 5, true)).await?;
    ensure!(r.status == 200, "{}", r.text());
    let events = r.sse_data();
    ensure!(
        events.last().map(String::as_str) == Some("[DONE]"),
        "{events:?}"
    );
    let mut texts = [String::new(), String::new()];
    let mut finished = [false, false];
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e)?;
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().context("index")? as usize;
            if let Some(t) = c["delta"]["content"].as_str() {
                texts[i].push_str(t);
            }
            if !c["finish_reason"].is_null() {
                finished[i] = true;
                ensure!(
                    c["logprobs"]["content"].is_array(),
                    "logprobs on the last chunk: {c}"
                );
            }
        }
    }
    ensure!(finished == [true, true], "{events:?}");
    for (i, t) in texts.iter().enumerate() {
        ensure!(
            t.as_str()
                == choices[i]["message"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            "streamed answer {i}: {t:?}"
        );
    }

    // Completions: the legacy logprobs shape.
    let r = post(
        server.addr,
        "/v1/completions",
        &json!({"model": "tiny-qwen2", "prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 2}),
    )
    .await?;
    let v = r.json()?;
    let lp = &v["choices"][0]["logprobs"];
    ensure!(lp["tokens"].as_array().map(Vec::len) == Some(4), "{v}");
    ensure!(
        lp["token_logprobs"].as_array().map(Vec::len) == Some(4),
        "{v}"
    );
    ensure!(
        lp["top_logprobs"][0].as_object().map(|m| m.len()) == Some(2),
        "{v}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn structured_outputs_and_forced_tool_calls() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let schema = json!({"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 10},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy"]}, "maxItems": 2}},
        "required": ["title", "year", "genres"], "additionalProperties": false});
    for (format, temperature) in [
        (
            json!({"type": "json_schema", "json_schema": {"name": "film", "schema": schema, "strict": true}}),
            0,
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "film", "schema": schema}}),
            1,
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "pick", "schema": {"type": "object",
            "properties": {"pick": {"enum": ["a", "b"]}}, "required": ["pick"], "additionalProperties": false}}}),
            1,
        ),
    ] {
        let v = chat(
            &server,
            json!({"model": "tiny-qwen2", "messages": user("A film?"), "max_tokens": 120,
                "temperature": temperature, "seed": 1, "response_format": format}),
        )
        .await?;
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .context("content")?;
        let parsed: Value =
            serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))?;
        ensure!(parsed.is_object(), "{text}");
        if format["json_schema"]["name"] == "film" {
            ensure!(
                parsed["title"].is_string() && parsed["year"].is_i64(),
                "{text}"
            );
            ensure!(parsed["genres"].is_array(), "{text}");
        }
    }

    // A named function: one call of it, no content, finish_reason tool_calls.
    let body = |stream: bool| {
        json!({"model": "tiny-qwen2", "messages": user("Time in Oslo?"), "max_tokens": 120,
            "temperature": 1, "seed": 4, "tools": weather_tools(), "stream": stream,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    };
    let v = chat(&server, body(false)).await?;
    let choice = &v["choices"][0];
    ensure!(choice["finish_reason"] == "tool_calls", "{v}");
    ensure!(choice["message"]["content"].is_null(), "{v}");
    let call = &choice["message"]["tool_calls"][0];
    ensure!(
        call["type"] == "function" && call["function"]["name"] == "get_time",
        "{v}"
    );
    ensure!(call["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let args: Value = serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .context("arguments")?,
    )?;
    ensure!(args["timezone"].is_string(), "{v}");

    // Streamed: id, type and name in the first delta, the arguments after; no markup in content.
    let r = post(server.addr, "/v1/chat/completions", &body(true)).await?;
    ensure!(r.status == 200, "{}", r.text());
    let (content, _, chunks) = chat_stream_text(&r.sse_data())?;
    ensure!(content.is_empty(), "content {content:?}");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    ensure!(deltas.len() >= 2, "{chunks:?}");
    ensure!(
        deltas[0]["id"]
            .as_str()
            .is_some_and(|s| s.starts_with("call-"))
            && deltas[0]["type"] == "function"
            && deltas[0]["function"]["name"] == "get_time",
        "{:?}",
        deltas[0]
    );
    ensure!(
        deltas[1..].iter().all(|d| d.get("id").is_none()),
        "{deltas:?}"
    );
    ensure!(deltas.iter().all(|d| d["index"] == 0), "{deltas:?}");
    let streamed_args: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    ensure!(
        streamed_args == call["function"]["arguments"].as_str().unwrap_or_default(),
        "{streamed_args}"
    );
    let last = chunks
        .iter()
        .rev()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .context("finish chunk")?;
    ensure!(
        last["choices"][0]["finish_reason"] == "tool_calls",
        "{last}"
    );

    // `required` with parallel calls off: exactly one call of either function.
    let mut b = body(false);
    b["tool_choice"] = json!("required");
    b["parallel_tool_calls"] = json!(false);
    let v = chat(&server, b).await?;
    ensure!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(Vec::len)
            == Some(1),
        "{v}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokenize_and_detokenize_reproduce_the_fixture() -> Result<()> {
    let server = TestServer::start(|_| {}).await?;
    let r = reference("tiny-qwen2");
    for case in r["cases"].as_array().context("cases")? {
        let prompt = case["prompt"].as_str().context("prompt")?;
        let ids = &case["input_ids"];
        let t = post(
            server.addr,
            "/tokenize",
            &json!({"model": "tiny-qwen2", "prompt": prompt}),
        )
        .await?;
        let t = t.json()?;
        ensure!(&t["tokens"] == ids, "{prompt:?}: {t}");
        ensure!(t["count"] == ids.as_array().map_or(0, Vec::len), "{t}");
        ensure!(t["max_model_len"].as_u64().is_some_and(|n| n > 0), "{t}");
        // llama-server's field names.
        let l = post(server.addr, "/tokenize", &json!({"content": prompt}))
            .await?
            .json()?;
        ensure!(&l["tokens"] == ids, "{l}");
        let d = post(server.addr, "/detokenize", &json!({"tokens": ids}))
            .await?
            .json()?;
        ensure!(d["prompt"] == prompt && d["content"] == prompt, "{d}");
    }
    for case in r["chat_template"].as_array().context("chat cases")? {
        let mut body = json!({"messages": case["messages"], "add_generation_prompt": case["add_generation_prompt"]});
        let kwargs: serde_json::Map<String, Value> = case
            .as_object()
            .context("case")?
            .iter()
            .filter(|(k, _)| {
                ![
                    "messages",
                    "add_generation_prompt",
                    "text",
                    "input_ids",
                    "greedy_8",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        body["chat_template_kwargs"] = Value::Object(kwargs);
        let t = post(server.addr, "/tokenize", &body).await?.json()?;
        ensure!(t["tokens"] == case["input_ids"], "{body}: {t}");
        let d = post(
            server.addr,
            "/detokenize",
            &json!({"tokens": case["input_ids"]}),
        )
        .await?
        .json()?;
        ensure!(d["prompt"] == case["text"], "{d}");
    }
    let bad = post(server.addr, "/detokenize", &json!({"tokens": [999999999]})).await?;
    ensure!(bad.status == 400, "{}", bad.text());
    let bad = post(server.addr, "/tokenize", &json!({})).await?;
    ensure!(bad.status == 400, "{}", bad.text());
    server.stop().await
}

/// A three-turn chat, each turn the history plus the greedy answer plus a new question.
async fn three_turns(server: &TestServer, opening: &str) -> Result<Vec<(String, u64, u64)>> {
    let mut history = json!([{"role": "system", "content": "You are terse."}]);
    let mut out = Vec::new();
    for question in [opening, "And then?", "Why?"] {
        history
            .as_array_mut()
            .context("history")?
            .push(json!({"role": "user", "content": question}));
        let v = chat(
            server,
            json!({"model": "tiny-qwen2", "messages": history, "max_tokens": 8, "temperature": 0}),
        )
        .await?;
        let answer = v["choices"][0]["message"]["content"]
            .as_str()
            .context("answer")?
            .to_string();
        let prompt = v["usage"]["prompt_tokens"]
            .as_u64()
            .context("prompt tokens")?;
        let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .context("cached tokens")?;
        history
            .as_array_mut()
            .context("history")?
            .push(json!({"role": "assistant", "content": answer}));
        out.push((answer, prompt, cached));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_prompt_cache_reuses_earlier_turns_without_changing_answers() -> Result<()> {
    let cold = TestServer::start(|o| o.prompt_cache_bytes = 0).await?;
    let want = three_turns(&cold, "Hello there").await?;
    ensure!(
        want.iter().all(|t| t.2 == 0),
        "no cache, nothing reused: {want:?}"
    );
    cold.stop().await?;

    let warm = TestServer::start(|_| {}).await?;
    let got = three_turns(&warm, "Hello there").await?;
    for (turn, (g, w)) in got.iter().zip(&want).enumerate() {
        ensure!(g.0 == w.0 && g.1 == w.1, "turn {turn}: {g:?} vs {w:?}");
    }
    ensure!(
        got[0].2 == 0,
        "the first turn has nothing to reuse: {got:?}"
    );
    // Turns two and three reuse at least the previous turn's whole prompt.
    ensure!(got[1].2 >= want[0].1 && got[1].2 < got[1].1, "{got:?}");
    ensure!(got[2].2 >= want[1].1 && got[2].2 < got[2].1, "{got:?}");
    let m = get(warm.addr, "/metrics").await?.text();
    ensure!(
        metric(&m, "gllm_prompt_cache_hits_total{model=\"tiny-qwen2\"}") == Some(2.0),
        "{m}"
    );
    let bytes = metric(&m, "gllm_prompt_cache_bytes{model=\"tiny-qwen2\"}").context("bytes")?;
    ensure!(bytes > 0.0, "{m}");
    warm.stop().await?;

    // A budget of about one conversation: older entries are evicted, answers unchanged.
    let budget = (bytes * 1.5) as usize;
    let tight = TestServer::start(|o| o.prompt_cache_bytes = budget).await?;
    for opening in ["Good morning", "Hello there"] {
        let got = three_turns(&tight, opening).await?;
        if opening == "Hello there" {
            for (turn, (g, w)) in got.iter().zip(&want).enumerate() {
                ensure!(
                    g.0 == w.0,
                    "turn {turn} under a tight budget: {g:?} vs {w:?}"
                );
            }
        }
    }
    let m = get(tight.addr, "/metrics").await?.text();
    let held = metric(&m, "gllm_prompt_cache_bytes{model=\"tiny-qwen2\"}").context("bytes")?;
    ensure!(held <= budget as f64, "{held} > {budget}: {m}");
    ensure!(
        metric(
            &m,
            "gllm_prompt_cache_evictions_total{model=\"tiny-qwen2\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{m}"
    );
    tight.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generations_are_admitted_against_the_kv_budget() -> Result<()> {
    // tiny-qwen2 on candle keeps 256 bytes of KV per position (2 layers x 2 KV heads x 8 x
    // keys and values x f32): 3000 positions' worth of budget.
    let server = TestServer::start(|o| o.kv_budget_bytes = 3000 * 256).await?;
    let ask = |max_tokens: usize| {
        json!({"model": "tiny-qwen2", "messages": user("Hello"), "max_tokens": max_tokens,
            "temperature": 0})
    };
    // Larger than the whole budget: never admitted.
    let r = post(server.addr, "/v1/chat/completions", &ask(5000)).await?;
    ensure!(r.status == 400, "{}: {}", r.status, r.text());
    ensure!(r.json()?["error"]["param"] == "max_tokens", "{}", r.text());

    // A long generation holds about 2000 positions while it runs...
    let addr = server.addr;
    let long = tokio::spawn(async move { post(addr, "/v1/chat/completions", &ask(2000)).await });
    let mut refused = None;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let m = get(server.addr, "/metrics").await?.text();
        if metric(&m, "gllm_generations_active{model=\"tiny-qwen2\"}") == Some(1.0) {
            // ...so a second one of that size does not fit, and a small one does.
            refused = Some(post(server.addr, "/v1/chat/completions", &ask(2000)).await?);
            let small = post(server.addr, "/v1/chat/completions", &ask(50)).await?;
            ensure!(small.status == 200, "{}: {}", small.status, small.text());
            break;
        }
    }
    let refused = refused.context("the long generation was never seen running")?;
    let finished = long.await??;
    ensure!(finished.status == 200, "{}", finished.text());
    let usage = &finished.json()?["usage"];
    ensure!(
        usage["completion_tokens"].as_u64().unwrap_or(0) > 200,
        "the long generation ended early, so the check proves little: {usage}"
    );
    ensure!(
        refused.status == 429,
        "{}: {}",
        refused.status,
        refused.text()
    );
    ensure!(
        refused.json()?["error"]["code"] == "kv_budget_full",
        "{}",
        refused.text()
    );
    // Once it has finished, the budget is free again.
    let again = post(server.addr, "/v1/chat/completions", &ask(2000)).await?;
    ensure!(again.status == 200, "{}: {}", again.status, again.text());
    server.stop().await
}
