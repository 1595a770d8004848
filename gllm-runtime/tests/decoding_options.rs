//! What a request can ask of generation beyond sampling, on tiny-qwen2: logprobs
//! (checked against the log-softmax of the reference logits), `n` answers from one
//! prefill (each equal to a single request with `seed + i`), and constrained
//! decoding (JSON Schema, any JSON object, forced tool calls) whose every answer
//! follows its grammar even from a model that writes gibberish.

mod support;

use futures::StreamExt;
use gllm_runtime::sampling::SamplingParams;
use gllm_runtime::{
    ChoiceEvent, GenerateRequest, Generation, GeneratorHandle, Grammar, Runtime, RuntimeError,
    StreamEvent, parse_tool_calls, tool_call_grammar,
};
use gllm_testkit::generate::TINY_QWEN2;
use gllm_testkit::read_tensor_f32;
use serde_json::{Value, json};

fn runtime() -> Runtime {
    support::runtime(&format!(
        "[[models]]\nid = \"tiny-qwen2\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"candle-qwen2\"]\ndevices = [\"cpu\"]\n",
        TINY_QWEN2.dir().display()
    ))
}

/// Log-softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|l| (*l as f64 - max).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|l| *l as f64 - max - lse).collect()
}

#[test]
fn logprobs_are_the_log_softmax_of_the_reference_logits() {
    let rt = runtime();
    let handle = rt.generator_blocking("tiny-qwen2").expect("loads");
    for (i, case) in TINY_QWEN2.cases().unwrap().iter().enumerate() {
        let (_, logits) =
            read_tensor_f32(&TINY_QWEN2.tensors(), &format!("logits_last.{i}")).unwrap();
        let want = log_softmax(&logits);
        let mut params = SamplingParams::greedy(4);
        params.logprobs = Some(20);
        let g = handle
            .generate_ids_blocking(&case.input_ids, &params, &mut |_| true)
            .unwrap();
        assert_eq!(g.logprobs.len(), g.token_ids.len(), "one entry per token");
        let first = &g.logprobs[0];
        assert_eq!(first.id, case.greedy_new_ids[0]);
        assert!(
            (first.logprob as f64 - want[first.id as usize]).abs() <= 1e-4,
            "case {i}: logprob {} vs {}",
            first.logprob,
            want[first.id as usize]
        );
        // The 20 most likely tokens of the reference, in order, with their values.
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|a, b| want[*b].total_cmp(&want[*a]));
        assert_eq!(first.top.len(), 20);
        for (k, (id, lp)) in first.top.iter().enumerate() {
            assert!(
                (*lp as f64 - want[*id as usize]).abs() <= 1e-4,
                "case {i}: top {k} id {id}: {lp} vs {}",
                want[*id as usize]
            );
            // Ranks agree except between near-ties.
            assert!(
                (want[order[k]] - want[*id as usize]).abs() <= 1e-4,
                "case {i}: rank {k}"
            );
        }
        // At every step the most likely entry is the greedy token.
        for (lp, id) in g.logprobs.iter().zip(&g.token_ids) {
            assert_eq!(lp.top[0].0, *id);
            assert_eq!(lp.id, *id);
            assert!(lp.logprob <= 0.0);
        }
    }
}

/// The answers of one multi-answer stream, by index.
async fn collect(
    stream: impl futures::Stream<Item = Result<ChoiceEvent, RuntimeError>>,
    n: usize,
) -> Vec<Generation> {
    let mut texts = vec![String::new(); n];
    let mut gens: Vec<Option<Generation>> = vec![None; n];
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let ev = ev.expect("no error");
        match ev.event {
            StreamEvent::Delta(d) => texts[ev.index].push_str(&d),
            StreamEvent::Done(g) => gens[ev.index] = Some(g),
        }
    }
    let gens: Vec<Generation> = gens
        .into_iter()
        .map(|g| g.expect("every answer ends"))
        .collect();
    for (t, g) in texts.iter().zip(&gens) {
        assert_eq!(t, &g.text, "the deltas make up the text");
    }
    gens
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        max_tokens: 12,
        ..SamplingParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_answers_equal_single_requests_with_successive_seeds() {
    let rt = runtime();
    let handle: GeneratorHandle = rt.generator("tiny-qwen2").await.expect("loads");
    let prompt = TINY_QWEN2.cases().unwrap()[0].prompt.clone();
    let request = |seed| GenerateRequest {
        prompt: prompt.clone(),
        params: sampled(seed),
    };
    let gens = collect(handle.generate_choices_stream_holding(request(7), 3, ()), 3).await;
    for (i, g) in gens.iter().enumerate() {
        let alone = handle
            .generate(request(7 + i as u64))
            .await
            .expect("single");
        assert_eq!(g.token_ids, alone.token_ids, "answer {i}");
        assert_eq!(g.text, alone.text, "answer {i}");
    }
    assert!(
        gens[0].token_ids != gens[1].token_ids || gens[1].token_ids != gens[2].token_ids,
        "different seeds sample different answers"
    );

    // A chat, too: the same conversation, the same seeds.
    let messages = vec![gllm_runtime::ChatMessage::new("user", "Hello")];
    let gens = collect(
        handle.chat_choices_stream_holding(messages.clone(), Default::default(), sampled(3), 2, ()),
        2,
    )
    .await;
    for (i, g) in gens.iter().enumerate() {
        let alone = handle
            .chat(messages.clone(), sampled(3 + i as u64))
            .await
            .expect("single");
        assert_eq!(g.token_ids, alone.token_ids, "chat answer {i}");
    }
}

/// A small validator for the schemas below: types, required keys, enums, bounds.
fn validate(v: &Value, s: &Value) -> Result<(), String> {
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        return if options.contains(v) {
            Ok(())
        } else {
            Err(format!("{v} not in {options:?}"))
        };
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let o = v.as_object().ok_or(format!("{v} is not an object"))?;
            for r in s["required"].as_array().into_iter().flatten() {
                let k = r.as_str().unwrap_or_default();
                if !o.contains_key(k) {
                    return Err(format!("missing {k} in {v}"));
                }
            }
            for (k, item) in o {
                let sub = &s["properties"][k];
                if sub.is_null() {
                    return Err(format!("unexpected key {k}"));
                }
                validate(item, sub)?;
            }
            Ok(())
        }
        Some("array") => {
            let a = v.as_array().ok_or(format!("{v} is not an array"))?;
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                && a.len() as u64 > max
            {
                return Err(format!("{} items", a.len()));
            }
            a.iter().try_for_each(|x| validate(x, &s["items"]))
        }
        Some("string") => v.as_str().map(drop).ok_or(format!("{v} is not a string")),
        // A JSON integer may have more digits than i64 holds (serde_json reads it as f64).
        Some("integer") => match v.as_f64() {
            Some(x) if v.is_i64() || v.is_u64() || x.fract() == 0.0 => Ok(()),
            _ => Err(format!("{v} is not an integer")),
        },
        Some("number") => v.as_f64().map(drop).ok_or(format!("{v} is not a number")),
        Some("boolean") => v.as_bool().map(drop).ok_or(format!("{v} is not a boolean")),
        other => Err(format!("schema type {other:?} not covered")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_answers_follow_their_schema() {
    let rt = runtime();
    let handle = rt.generator("tiny-qwen2").await.expect("loads");
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer"},
            "mood": {"enum": ["happy", "sad"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        },
        "required": ["name", "age", "mood", "tags"],
        "additionalProperties": false,
    });
    // (Any JSON object is checked with the real model in gllm-server's openai_agent test:
    // a model that writes gibberish never closes an object without bounds.)
    for (grammar, schema) in [(Grammar::JsonSchema(schema.clone()), Some(&schema))] {
        for (temperature, seed) in [(0.0, 0), (1.0, 1), (1.0, 2)] {
            let params = SamplingParams {
                temperature,
                seed: Some(seed),
                max_tokens: 160,
                grammar: Some(grammar.clone()),
                ..SamplingParams::default()
            };
            let g = handle
                .chat(
                    vec![gllm_runtime::ChatMessage::new("user", "Describe a person.")],
                    params,
                )
                .await
                .expect("generates");
            let v: Value = serde_json::from_str(&g.text)
                .unwrap_or_else(|e| panic!("{:?} at t={temperature}: {e}: {}", grammar, g.text));
            assert!(v.is_object(), "{}", g.text);
            if let Some(s) = schema {
                validate(&v, s).unwrap_or_else(|e| panic!("{e}: {}", g.text));
            }
            assert_eq!(
                g.finish_reason,
                gllm_runtime::FinishReason::Stop,
                "the grammar ends the answer: {}",
                g.text
            );
        }
    }
    // A schema llguidance refuses is a bad request naming the problem, before any work.
    let e = handle
        .check_grammar(&Grammar::JsonSchema(
            json!({"type": "object", "properties": {"a": {"type": "frobnicate"}}}),
        ))
        .expect_err("unknown type");
    assert!(matches!(e, RuntimeError::InvalidRequest(_)), "{e}");
    assert!(e.to_string().contains("frobnicate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_tool_call_is_a_valid_call() {
    let rt = runtime();
    let handle = rt.generator("tiny-qwen2").await.expect("loads");
    let tools = vec![
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "get_time", "parameters": {
            "type": "object", "properties": {"timezone": {"type": "string", "maxLength": 12}}, "required": ["timezone"],
            "additionalProperties": false}}}),
    ];
    let names = vec!["get_weather".to_string(), "get_time".to_string()];
    for (only, seed) in [(Some("get_time"), 1), (None, 2), (None, 3)] {
        let params = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            max_tokens: 200,
            grammar: Some(Grammar::Lark(tool_call_grammar(&tools, only, false))),
            ..SamplingParams::default()
        };
        let g = handle
            .chat(
                vec![gllm_runtime::ChatMessage::new("user", "Time in Oslo?")],
                params,
            )
            .await
            .expect("generates");
        let parsed = parse_tool_calls(&g.text, &names);
        assert_eq!(parsed.calls.len(), 1, "{}", g.text);
        assert_eq!(parsed.content, "", "{}", g.text);
        if let Some(name) = only {
            assert_eq!(parsed.calls[0].name, name);
        }
        let args: Value =
            serde_json::from_str(&parsed.calls[0].arguments).expect("arguments parse");
        let key = if parsed.calls[0].name == "get_time" {
            "timezone"
        } else {
            "city"
        };
        assert!(args[key].is_string(), "{}", g.text);
    }
}
