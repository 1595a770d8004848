//! Backends are interchangeable by manifest alone: the same tiny-qwen2 (or
//! tiny-qwen3) model under `backends = ["burn-qwen2"]` and `["candle-qwen2"]`, and its
//! llama.cpp GGUF conversion, give the same greedy tokens, equal to transformers'
//! reference, with no code change.

mod support;

use gllm_runtime::{GenerateRequest, SamplingParams};
use gllm_testkit::{fixture, json_u32s, read_json};

#[tokio::test]
async fn switching_the_backend_in_the_manifest_changes_no_token() {
    for (name, gguf) in [
        ("tiny-qwen2", "tiny-qwen2-f16.gguf"),
        ("tiny-qwen3", "tiny-qwen3-f16.gguf"),
    ] {
        let gguf = format!("{}/{gguf}", support::fixture_path("gguf"));
        same_tokens_everywhere(name, &gguf).await;
    }
}

async fn same_tokens_everywhere(name: &str, gguf: &str) {
    let reference = read_json(&fixture(name).join("reference.json")).unwrap();
    let dir = support::fixture_path(name);
    let mut outputs = Vec::new();
    for (path, backend) in [
        (dir.as_str(), "candle-qwen2"),
        (dir.as_str(), "burn-qwen2"),
        (gguf, "candle-qwen2"),
    ] {
        let h = support::decoder_runtime(path, backend)
            .generator("qwen")
            .await
            .unwrap();
        assert_eq!(h.active().backend, backend);
        let mut per_case = Vec::new();
        for case in reference["cases"].as_array().unwrap() {
            let g = h
                .generate(GenerateRequest {
                    prompt: case["prompt"].as_str().unwrap().into(),
                    params: SamplingParams::greedy(24),
                })
                .await
                .unwrap();
            assert_eq!(
                g.token_ids,
                json_u32s(&case["greedy_new_ids"]),
                "{path} on {backend}: {}",
                case["prompt"]
            );
            per_case.push((g.token_ids, g.text));
        }
        // chat cases: the first 8 greedy tokens after the reference's rendered conversation
        for case in reference["chat_template"].as_array().unwrap() {
            let ids = json_u32s(&case["input_ids"]);
            let g = h
                .generate_ids_blocking(&ids, &SamplingParams::greedy(8), &mut |_| true)
                .unwrap();
            assert_eq!(
                g.token_ids,
                json_u32s(&case["greedy_8"]["ids"]),
                "{path} on {backend}: chat"
            );
            assert_eq!(
                g.text,
                case["greedy_8"]["text_skip_special"].as_str().unwrap()
            );
            per_case.push((g.token_ids, g.text));
        }
        outputs.push(per_case);
    }
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{name}");
}
