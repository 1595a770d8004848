//! Backends are interchangeable by manifest alone: the same tiny-qwen2 model
//! under `backends = ["burn-qwen2"]` and `["candle-qwen2"]` gives the same
//! greedy tokens, equal to transformers' reference, with no code change.
#![cfg(all(feature = "burn-qwen2", feature = "candle-qwen2"))]

mod support;

use gllm_runtime::{GenerateRequest, SamplingParams};
use gllm_testkit::{fixture, json_u32s, read_json};

#[tokio::test]
async fn switching_the_backend_in_the_manifest_changes_no_token() {
    let reference = read_json(&fixture("tiny-qwen2").join("reference.json")).unwrap();
    let mut outputs = Vec::new();
    for backend in ["candle-qwen2", "burn-qwen2"] {
        let h = support::tiny_qwen2_runtime(backend)
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
                "{backend}: {}",
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
                "{backend}: chat"
            );
            assert_eq!(
                g.text,
                case["greedy_8"]["text_skip_special"].as_str().unwrap()
            );
            per_case.push((g.token_ids, g.text));
        }
        outputs.push(per_case);
    }
    assert_eq!(outputs[0], outputs[1]);
}
