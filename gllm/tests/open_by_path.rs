//! The facade opens each kind of model by path in one call, and the numbers are the
//! references': tiny-bert's sentence-transformers embeddings, the tiny cross-encoder's
//! logits, tiny-qwen2's greedy tokens.

use gllm_testkit::{assert_close, fixture, json_f32s, json_strings, json_u32s, read_json};

#[tokio::test(flavor = "multi_thread")]
async fn an_embedder_opens_by_path_and_matches_sentence_transformers() -> anyhow::Result<()> {
    let dir = fixture("tiny-bert");
    let reference = read_json(&dir.join("reference.json"))?;
    let sentences = json_strings(&reference["sentences"]);
    // On the CPU, within 1e-5.
    let cpu = gllm::Options::new().cpu().embedder(&dir).await?;
    let rows = cpu.embed(sentences.clone()).await?;
    assert_eq!(rows.len(), sentences.len());
    for (i, row) in rows.iter().enumerate() {
        assert_close(
            &format!("sentence {i}"),
            &row.embedding,
            &json_f32s(&reference["embeddings"][i]),
            1e-5,
        );
    }
    // With the built-in device order (a GPU first when one works): within 1e-4.
    let any = gllm::Embedder::open(&dir).await?;
    let rows = any.embed(sentences[..1].to_vec()).await?;
    assert_close(
        "sentence 0, default devices",
        &rows[0].embedding,
        &json_f32s(&reference["embeddings"][0]),
        1e-4,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reranker_opens_by_path_and_matches_the_cross_encoder() -> anyhow::Result<()> {
    let dir = fixture("tiny-cross-encoder");
    let reference = read_json(&dir.join("reference.json"))?;
    let reranker = gllm::Options::new().cpu().reranker(&dir).await?;
    for q in reference["queries"].as_array().unwrap() {
        let docs = json_strings(&q["documents"]);
        let results = reranker
            .rerank(
                q["query"].as_str().unwrap().to_string(),
                docs.clone(),
                None,
                false,
            )
            .await?;
        assert_eq!(results.len(), docs.len());
        let logits = json_f32s(&q["logits"]);
        for r in &results {
            assert!(
                (r.logit - logits[r.index]).abs() <= 1e-5,
                "{}: logit {}: {} vs {}",
                q["query"],
                r.index,
                r.logit,
                logits[r.index]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generator_opens_by_path_and_gives_the_greedy_reference() -> anyhow::Result<()> {
    let dir = fixture("tiny-qwen2");
    let reference = read_json(&dir.join("reference.json"))?;
    let generator = gllm::Options::new()
        .cpu()
        .backend("candle-qwen2")
        .generator(&dir)
        .await?;
    for case in reference["cases"].as_array().unwrap() {
        let want = json_u32s(&case["greedy_new_ids"]);
        let mut params = generator.default_params();
        params.temperature = 0.0;
        params.max_tokens = want.len();
        let out = generator
            .generate(gllm::GenerateRequest {
                prompt: case["prompt"].as_str().unwrap().to_string(),
                params,
            })
            .await?;
        assert_eq!(out.token_ids, want, "{}", case["prompt"]);
        assert_eq!(out.text, case["greedy_text"].as_str().unwrap());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_locations_and_options_are_clear_errors() {
    let err = gllm::Embedder::open("/no/such/model")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/no/such/model does not exist"), "{err}");
    let err = gllm::Options::new()
        .backend("no-such-backend")
        .embedder(fixture("tiny-bert"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown backend `no-such-backend`"), "{err}");
    // A decoder is not an embedder.
    let err = gllm::Embedder::open(fixture("tiny-qwen2"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("this model serves generate, not embed"),
        "{err}"
    );
}
