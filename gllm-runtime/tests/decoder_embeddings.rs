//! Qwen3-Embedding's layout through the runtime: a Qwen3 base model with a
//! sentence-transformers chain (last-token pooling, Normalize), its tokenizer appending
//! `<|endoftext|>`, and named prompts. References from `SentenceTransformer.encode`.

mod support;

use gllm_api::ErrorKind;
use gllm_runtime::{EmbedderHandle, RuntimeError};
use gllm_testkit::{assert_close, fixture, json_u32s, read_json};
use support::fixture_path;

/// Tolerance on embeddings against sentence-transformers (float32 on bf16 weights).
const TOL: f32 = 1e-5;

fn embedder() -> EmbedderHandle {
    let rt = support::runtime(&format!(
        "[[models]]\nid = \"qwen3-embed\"\ntask = \"embed\"\npath = \"{}\"\nbackends = [\"candle-qwen2\"]\ndevices = [\"cpu\"]\n",
        fixture_path("tiny-qwen3-embedding")
    ));
    rt.embedder_blocking("qwen3-embed").unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn documents_and_queries_match_sentence_transformers() {
    let r = read_json(&fixture("tiny-qwen3-embedding").join("reference.json")).unwrap();
    let h = embedder();
    assert_eq!(h.active().backend, "candle-qwen2");
    assert_eq!(h.prompt_names(), ["document", "query"]);
    for (texts, prompt, ids, embeddings) in [
        (
            "documents",
            None,
            "document_input_ids",
            "document_embeddings",
        ),
        (
            "queries",
            Some("query"),
            "query_input_ids",
            "query_embeddings",
        ),
    ] {
        let texts = strings(&r[texts]);
        let inputs = h.tokenize_all(&texts, prompt).unwrap();
        let want_ids: Vec<Vec<u32>> = r[ids].as_array().unwrap().iter().map(json_u32s).collect();
        let got_ids: Vec<Vec<u32>> = inputs.iter().map(|i| i.ids.clone()).collect();
        assert_eq!(got_ids, want_ids, "{texts:?}");
        let got = h.embed_blocking_with_prompt(&texts, prompt).unwrap();
        for (i, (g, w)) in got.iter().zip(rows(&r[embeddings])).enumerate() {
            assert_close(&format!("{embeddings}[{i}]"), &g.embedding, &w, TOL);
            assert_eq!(g.tokens, want_ids[i].len());
        }
        // A text's embedding does not depend on the batch it came in.
        for (i, t) in texts.iter().enumerate() {
            let alone = h
                .embed_blocking_with_prompt(std::slice::from_ref(t), prompt)
                .unwrap();
            assert_eq!(alone[0].embedding, got[i].embedding, "{t:?} alone");
        }
    }
}

#[test]
fn an_unknown_prompt_name_lists_the_models_prompts() {
    let h = embedder();
    let e = h
        .embed_blocking_with_prompt(&["x".to_string()], Some("passage"))
        .unwrap_err();
    let RuntimeError::InvalidRequest(m) = &e else {
        panic!("{e}");
    };
    assert!(
        m.contains("`passage`") && m.contains("document, query"),
        "{m}"
    );
}

#[test]
fn a_decoder_without_sentence_transformers_files_needs_a_pooling() {
    let rt = support::runtime(&format!(
        "[[models]]\nid = \"bare\"\ntask = \"embed\"\npath = \"{}\"\nbackends = [\"candle-qwen2\"]\ndevices = [\"cpu\"]\n",
        fixture_path("tiny-qwen3")
    ));
    let e = rt
        .embedder_blocking("bare")
        .err()
        .expect("loaded without a pooling");
    assert_eq!(
        e.backend_error().map(|b| b.kind),
        Some(ErrorKind::InvalidModel),
        "{e}"
    );
    assert!(e.to_string().contains("pooling = \"last_token\""), "{e}");
}
