//! Scores documents against a query with a cross-encoder opened by path, best first.
//!
//!   cargo run --release -p gllm --example rerank -- MODEL_DIR QUERY DOC...
//!
//! Without arguments it runs the repository's tiny cross-encoder fixture
//! (`../shared/fixtures/tiny-cross-encoder`, or `$GLLM_FIXTURES`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, query, docs) = match args.as_slice() {
        [model, query, docs @ ..] if !docs.is_empty() => {
            (model.clone(), query.clone(), docs.to_vec())
        }
        _ => {
            let fixtures =
                std::env::var("GLLM_FIXTURES").unwrap_or_else(|_| "../shared/fixtures".into());
            (
                format!("{fixtures}/tiny-cross-encoder"),
                "what is a cat?".to_string(),
                vec![
                    "A cat is a small domesticated feline.".to_string(),
                    "The stock market closed higher.".to_string(),
                ],
            )
        }
    };
    let reranker = gllm::Reranker::open(&model).await?;
    for r in reranker
        .rerank(query.clone(), docs.clone(), None, false)
        .await?
    {
        println!("{:.4}  {}", r.score, docs[r.index]);
    }
    Ok(())
}
