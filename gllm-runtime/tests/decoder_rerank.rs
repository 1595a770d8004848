//! Qwen3-Reranker's scoring through the runtime: a Qwen3ForCausalLM under
//! `task = "rerank"`, each pair scored as the model card does (P(yes) over yes/no at
//! the last position), against transformers' numbers, on both decoder backends.

mod support;

use gllm_runtime::RerankerHandle;
use gllm_testkit::{fixture, json_strings, json_u32s, read_json};
use support::fixture_path;

/// Tolerances against transformers (float32): logits and P(yes).
const LOGIT_TOL: f32 = 1e-4;
const SCORE_TOL: f32 = 1e-5;

fn reranker(backend: &str, instruction: Option<&str>) -> RerankerHandle {
    let options = instruction
        .map(|i| format!("[models.options]\ninstruction = {i:?}\n"))
        .unwrap_or_default();
    let rt = support::runtime(&format!(
        "[[models]]\nid = \"qwen3-rerank\"\ntask = \"rerank\"\npath = \"{}\"\nbackends = [\"{backend}\"]\ndevices = [\"cpu\"]\n{options}",
        fixture_path("tiny-qwen3-reranker")
    ));
    rt.reranker_blocking("qwen3-rerank").unwrap()
}

#[test]
fn pairs_score_as_the_model_card_on_both_backends() {
    let r = read_json(&fixture("tiny-qwen3-reranker").join("reference.json")).unwrap();
    for backend in ["candle-qwen2", "burn-qwen2"] {
        for q in r["queries"].as_array().unwrap() {
            let h = reranker(backend, q["instruction"].as_str());
            assert_eq!(h.active().backend, backend);
            let query = q["query"].as_str().unwrap();
            let results = q["results"].as_array().unwrap();
            let docs: Vec<String> = results
                .iter()
                .map(|x| x["document"].as_str().unwrap().to_string())
                .collect();
            for (d, want) in docs.iter().zip(results) {
                let ids = h.encode_pair(query, d).unwrap().ids;
                assert_eq!(ids, json_u32s(&want["input_ids"]), "{backend}: {d:?}");
            }
            let got = h.rerank_blocking(query, &docs, None, true).unwrap();
            assert_eq!(got.len(), docs.len());
            for g in &got {
                let want = &results[g.index];
                let (logit, score) = (
                    want["logit"].as_f64().unwrap() as f32,
                    want["score"].as_f64().unwrap() as f32,
                );
                assert!(
                    (g.logit - logit).abs() <= LOGIT_TOL,
                    "{backend} {query:?} doc {}: logit {} vs {logit}",
                    g.index,
                    g.logit
                );
                assert!(
                    (g.score - score).abs() <= SCORE_TOL,
                    "{backend} {query:?} doc {}: score {} vs {score}",
                    g.index,
                    g.score
                );
                assert_eq!(g.document.as_deref(), Some(docs[g.index].as_str()));
            }
            assert!(
                got.windows(2).all(|w| w[0].score >= w[1].score),
                "best first"
            );
        }
    }
}

#[test]
fn an_instruction_that_leaves_no_room_is_refused() {
    let long = "word ".repeat(9000);
    let h = reranker("candle-qwen2", Some(&long));
    let e = h
        .rerank_blocking("q", &json_strings(&serde_json::json!(["d"])), None, false)
        .unwrap_err();
    assert!(
        e.to_string().contains("instruction and the query take"),
        "{e}"
    );
}
