//! Streaming and the generation loop: deltas, multi-byte characters split
//! across tokens, EOS, max tokens, stop strings, seeds, bad requests.

mod support;

use futures::StreamExt;
use gllm_runtime::tokenizer::TextTokenizer;
use gllm_runtime::{FinishReason, GenerateRequest, RuntimeError, SamplingParams, StreamEvent};
use support::{fixture_path, runtime};

fn qwen_tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&gllm_testkit::fixture("tiny-qwen2").join("tokenizer.json")).unwrap()
}

fn manifest(id: &str, script: &[u32]) -> String {
    let script: Vec<String> = script.iter().map(u32::to_string).collect();
    format!(
        r#"
[[models]]
id = "{id}"
task = "generate"
path = "{}"
backends = ["fault-test"]
devices = ["cpu"]
[models.options]
script = "{}"
"#,
        fixture_path("tiny-qwen2"),
        script.join(",")
    )
}

async fn collect(
    h: &gllm_runtime::GeneratorHandle,
    prompt: &str,
    params: SamplingParams,
) -> (Vec<String>, gllm_runtime::Generation) {
    let mut s = Box::pin(h.generate_stream(GenerateRequest {
        prompt: prompt.into(),
        params,
    }));
    let mut deltas = Vec::new();
    let mut done = None;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            StreamEvent::Delta(d) => deltas.push(d),
            StreamEvent::Done(g) => done = Some(g),
        }
    }
    (deltas, done.unwrap())
}

/// Token ids of text that splits multi-byte characters across tokens.
fn split_char_ids(tok: &TextTokenizer) -> (String, Vec<u32>) {
    let text = "Crab 🦀 says 你好, naïve café! 🦀🦀".to_string();
    let ids = tok.encode(&text, false).unwrap().ids;
    let partial = ids
        .iter()
        .filter(|&&id| tok.decode(&[id], false).unwrap().contains('\u{FFFD}'))
        .count();
    assert!(
        partial >= 2,
        "the test text must split characters across tokens"
    );
    (text, ids)
}

#[tokio::test]
async fn deltas_concatenate_to_the_full_decode_with_split_characters() {
    let tok = qwen_tokenizer();
    let (text, ids) = split_char_ids(&tok);
    // The fake model emits script[cache_len % len]; the 5-token prompt starts it at 5.
    let prompt = "Hello, my name is";
    assert_eq!(tok.encode(prompt, true).unwrap().ids.len(), 5);
    let mut script = vec![0u32; 5];
    script.extend(&ids);
    let id = "split";
    let rt = runtime(&manifest(id, &script));
    let h = rt.generator(id).await.unwrap();
    let params = SamplingParams::greedy(ids.len());
    let (deltas, g) = collect(&h, prompt, params.clone()).await;
    assert_eq!(g.token_ids, ids);
    assert_eq!(g.finish_reason, FinishReason::Length);
    for d in &deltas {
        assert!(
            !d.contains('\u{FFFD}'),
            "delta {d:?} holds a broken character"
        );
    }
    assert_eq!(deltas.concat(), text);
    assert_eq!(g.text, text);
    assert_eq!(tok.decode(&g.token_ids, true).unwrap(), text);
    // the non-streaming call gives the same text
    let whole = h
        .generate(GenerateRequest {
            prompt: prompt.into(),
            params,
        })
        .await
        .unwrap();
    assert_eq!(whole, g);
}

#[tokio::test]
async fn eos_stops_and_is_not_emitted() {
    let tok = qwen_tokenizer();
    let words = tok.encode(" one two three", false).unwrap().ids;
    let mut script = vec![0u32; 5];
    script.extend(&words);
    script.push(151645); // <|im_end|>, an EOS of generation_config.json
    let id = "eos";
    let rt = runtime(&manifest(id, &script));
    let h = rt.generator(id).await.unwrap();
    assert_eq!(h.eos_ids(), &[151643, 151645]);
    let g = h
        .generate(GenerateRequest {
            prompt: "Hello, my name is".into(),
            params: SamplingParams::greedy(50),
        })
        .await
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(g.token_ids, words);
    assert_eq!(g.text, " one two three");
}

#[tokio::test]
async fn stop_strings_end_generation_and_are_not_emitted() {
    let tok = qwen_tokenizer();
    let ids = tok
        .encode(" alpha beta<END> gamma delta", false)
        .unwrap()
        .ids;
    let mut script = vec![0u32; 5];
    script.extend(&ids);
    let id = "stops";
    let rt = runtime(&manifest(id, &script));
    let h = rt.generator(id).await.unwrap();
    let params = SamplingParams {
        stop: vec!["<END>".into()],
        ..SamplingParams::greedy(50)
    };
    let (deltas, g) = collect(&h, "Hello, my name is", params).await;
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(g.text, " alpha beta");
    assert_eq!(deltas.concat(), " alpha beta");
    // max tokens: finish_reason length
    let g = h
        .generate(GenerateRequest {
            prompt: "Hello, my name is".into(),
            params: SamplingParams::greedy(2),
        })
        .await
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.token_ids.len(), 2);
}

#[tokio::test]
async fn seeds_make_sampling_reproducible() {
    let id = "seeds";
    let rt = runtime(&manifest(id, &[]));
    let h = rt.generator(id).await.unwrap();
    let run = |seed| {
        let h = h.clone();
        async move {
            let params = SamplingParams {
                temperature: 1.5,
                seed: Some(seed),
                ..SamplingParams::greedy(32)
            };
            h.generate(GenerateRequest {
                prompt: "Hello".into(),
                params,
            })
            .await
            .unwrap()
            .token_ids
        }
    };
    assert_eq!(run(1).await, run(1).await);
    assert_ne!(run(1).await, run(2).await);
    // top-k 1 is greedy
    let greedy = h
        .generate(GenerateRequest {
            prompt: "Hello".into(),
            params: SamplingParams::greedy(32),
        })
        .await
        .unwrap();
    let top1 = h
        .generate(GenerateRequest {
            prompt: "Hello".into(),
            params: SamplingParams {
                temperature: 1.0,
                top_k: 1,
                seed: Some(5),
                ..SamplingParams::greedy(32)
            },
        })
        .await
        .unwrap();
    assert_eq!(greedy.token_ids, top1.token_ids);
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let id = "bad";
    let rt = runtime(&manifest(id, &[]));
    let h = rt.generator(id).await.unwrap();
    let err = h
        .generate(GenerateRequest {
            prompt: String::new(),
            params: SamplingParams::greedy(4),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("prompt is empty"), "{err}");
    let err = h
        .generate(GenerateRequest {
            prompt: "hi".into(),
            params: SamplingParams {
                top_p: 2.0,
                ..SamplingParams::greedy(4)
            },
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
    // a generator is not an embedder
    let err = match rt.embedder(id).await {
        Ok(_) => panic!("generate model used as embedder"),
        Err(e) => e,
    };
    assert!(
        err.to_string()
            .contains("is a `generate` model; it cannot embed"),
        "{err}"
    );
    let err = match rt.generator("nope").await {
        Ok(_) => panic!("unknown model loaded"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        "unknown model `nope` (the manifest has: bad)"
    );
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_generation() {
    let id = "cancel";
    let rt = runtime(&manifest(id, &[]));
    let h = rt.generator(id).await.unwrap();
    let mut s = Box::pin(h.generate_stream(GenerateRequest {
        prompt: "Hello".into(),
        params: SamplingParams::greedy(100_000),
    }));
    let first = s.next().await.unwrap().unwrap();
    assert!(matches!(first, StreamEvent::Delta(_)));
    drop(s);
    // the model is free again: a normal request completes
    let g = h
        .generate(GenerateRequest {
            prompt: "Hello".into(),
            params: SamplingParams::greedy(3),
        })
        .await
        .unwrap();
    assert_eq!(g.token_ids.len(), 3);
}

#[tokio::test]
async fn chat_sessions_reuse_the_cache_across_turns() {
    let id = "chat";
    let rt = runtime(&manifest(id, &[]));
    let h = rt.generator(id).await.unwrap();
    let mut session = h.chat_session(Some("Be brief.".into()));
    let params = SamplingParams::greedy(6);
    let first = session
        .send_blocking("Hi there!", &params, &mut |_| true)
        .unwrap();
    let after_first = session.cached_tokens();
    assert!(after_first > 0);
    let fed_before = support::counters_of(id).fed;
    let second = session
        .send_blocking("And again?", &params, &mut |_| true)
        .unwrap();
    let fed_second_turn = support::counters_of(id).fed - fed_before;
    let conversation = h.encode_chat(&session.messages()[..4]).unwrap().len();
    // only the new turn's tokens (and the decode steps) were fed, not the whole history
    assert!(
        fed_second_turn < conversation - after_first + params.max_tokens + 8,
        "fed {fed_second_turn} tokens for a {conversation}-token conversation with {after_first} cached"
    );
    assert_eq!(session.messages().len(), 5);
    assert_eq!(session.messages()[2].content, first.text);
    assert_eq!(session.messages()[4].content, second.text);
    // the second turn answers like a fresh generation over the whole conversation
    let fresh = h
        .chat(session.messages()[..4].to_vec(), params)
        .await
        .unwrap();
    assert_eq!(fresh.token_ids, second.token_ids);
}
