//! The RoBERTa family through the runtime, from text: tiny-roberta (byte-level BPE,
//! CLS pooling) against `SentenceTransformer.encode`, and tiny-xlm-roberta-reranker
//! (SentencePiece-Unigram pairs `<s> q </s></s> d </s>`) against `CrossEncoder.predict`.
//! The manifests name no backend: the runtime picks the one that serves the
//! `model_type`.

mod support;

use gllm_runtime::{EmbedderHandle, RerankerHandle};
use gllm_testkit::{assert_close, cosine, fixture, json_f32s, json_strings, json_u32s, read_json};
use support::fixture_path;

/// Embeddings and cross-encoder logits against float32 sentence-transformers
/// (its float32 and float64 runs differ by up to 3.8e-6).
const TOL: f32 = 1e-5;

fn manifest(id: &str, task: &str, fixture_name: &str) -> String {
    format!(
        "[[models]]\nid = \"{id}\"\ntask = \"{task}\"\npath = \"{}\"\ndevices = [\"cpu\"]\n",
        fixture_path(fixture_name)
    )
}

fn embedder() -> EmbedderHandle {
    support::runtime(&manifest("roberta", "embed", "tiny-roberta"))
        .embedder_blocking("roberta")
        .unwrap()
}

fn reranker() -> RerankerHandle {
    support::runtime(&manifest("xlmr", "rerank", "tiny-xlm-roberta-reranker"))
        .reranker_blocking("xlmr")
        .unwrap()
}

#[test]
fn roberta_embeddings_match_sentence_transformers() {
    let r = read_json(&fixture("tiny-roberta").join("reference.json")).unwrap();
    let h = embedder();
    assert_eq!(h.active().backend, "burn-bert");
    let sentences = json_strings(&r["sentences"]);
    let want_ids: Vec<Vec<u32>> = r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_u32s)
        .collect();
    let got_ids = h.tokenize_all(&sentences, None).unwrap();
    for (i, (got, want)) in got_ids.iter().zip(&want_ids).enumerate() {
        assert_eq!(got.ids, *want, "sentence {i} {:?}", sentences[i]);
    }
    // The 296-token sentence is cut to max_seq_length 128, as sentence-transformers cuts it.
    let lengths: Vec<u64> = r["untruncated_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(
        lengths.iter().any(|&l| l > 128),
        "the reference has a long sentence"
    );
    assert!(got_ids.iter().all(|e| e.ids.len() <= 128));

    let want: Vec<Vec<f32>> = r["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_f32s)
        .collect();
    let together = h.embed_blocking(&sentences).unwrap();
    for (i, (got, want)) in together.iter().zip(&want).enumerate() {
        assert_close(
            &format!("sentence {i} (batched)"),
            &got.embedding,
            want,
            TOL,
        );
        assert_eq!(got.tokens, want_ids[i].len());
    }
    for (i, s) in sentences.iter().enumerate() {
        let alone = h.embed_blocking(std::slice::from_ref(s)).unwrap();
        assert_close(
            &format!("sentence {i} (alone)"),
            &alone[0].embedding,
            &want[i],
            TOL,
        );
    }
    let cos: Vec<Vec<f32>> = r["cosine"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_f32s)
        .collect();
    for (i, row) in cos.iter().enumerate() {
        let got: Vec<f32> = together
            .iter()
            .map(|e| cosine(&together[i].embedding, &e.embedding))
            .collect();
        assert_close(&format!("cosine row {i}"), &got, row, TOL);
    }
}

#[test]
fn xlm_roberta_pairs_score_as_the_cross_encoder() {
    let r = read_json(&fixture("tiny-xlm-roberta-reranker").join("reference.json")).unwrap();
    let h = reranker();
    assert_eq!(h.active().backend, "burn-bert");
    let mut saw_truncation = false;
    for (qi, q) in r["queries"].as_array().unwrap().iter().enumerate() {
        let query = q["query"].as_str().unwrap();
        let docs = json_strings(&q["documents"]);
        let ids: Vec<Vec<u32>> = q["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(json_u32s)
            .collect();
        for (d, (doc, want)) in docs.iter().zip(&ids).enumerate() {
            let pair = h.encode_pair(query, doc).unwrap();
            assert_eq!(pair.ids, *want, "query {qi} document {d} {doc:?}");
            assert!(pair.type_ids.iter().all(|&t| t == 0), "one token type");
        }
        let untruncated = q["untruncated_lengths"].as_array().unwrap();
        saw_truncation |= untruncated
            .iter()
            .any(|l| l.as_u64().is_some_and(|l| l > 512));
        let logits = json_f32s(&q["logits"]);
        let scores = json_f32s(&q["scores_sigmoid"]);
        let got = h.rerank_blocking(query, &docs, None, false).unwrap();
        assert_eq!(got.len(), docs.len());
        for g in &got {
            assert!(
                (g.logit - logits[g.index]).abs() <= TOL,
                "query {qi} document {}: logit {} vs {}",
                g.index,
                g.logit,
                logits[g.index]
            );
            assert!(
                (g.score - scores[g.index]).abs() <= 1e-6,
                "query {qi} document {}: score {} vs {}",
                g.index,
                g.score,
                scores[g.index]
            );
        }
        assert!(
            got.windows(2).all(|w| w[0].score >= w[1].score),
            "best first"
        );
    }
    assert!(
        saw_truncation,
        "a document longer than 512 tokens was scored"
    );
}
