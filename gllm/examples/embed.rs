//! Embeds sentences with a model opened by path and prints their cosine similarities.
//!
//!   cargo run --release -p gllm --example embed -- [MODEL_DIR] [SENTENCE...]
//!
//! MODEL_DIR defaults to all-MiniLM-L6-v2 as `scripts/fetch-models.sh` leaves it
//! (`$GLLM_TEST_MODELS`, default `~/.cache/gllm-test-models`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| models_dir("all-MiniLM-L6-v2"));
    let mut sentences: Vec<String> = args.collect();
    if sentences.is_empty() {
        sentences = vec![
            "The cat sits on the mat.".into(),
            "A cat is sitting on a rug.".into(),
            "Stock markets fell sharply today.".into(),
        ];
    }
    let embedder = gllm::Embedder::open(&model).await?;
    let rows = embedder.embed(sentences.clone()).await?;
    println!(
        "{} vectors of {} from {model}",
        rows.len(),
        rows[0].embedding.len()
    );
    for (i, a) in rows.iter().enumerate() {
        for (j, b) in rows.iter().enumerate().skip(i + 1) {
            let dot: f32 = a
                .embedding
                .iter()
                .zip(&b.embedding)
                .map(|(x, y)| x * y)
                .sum();
            println!(
                "cos({i}, {j}) = {dot:.4}   {:?} / {:?}",
                sentences[i], sentences[j]
            );
        }
    }
    Ok(())
}

fn models_dir(name: &str) -> String {
    let base = std::env::var("GLLM_TEST_MODELS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/gllm-test-models",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{base}/{name}")
}
