//! Chats with a GGUF model opened by path, greedy, streaming nothing: prints the answer.
//!
//!   cargo run --release -p gllm --example generate -- [MODEL.gguf] [MESSAGE]
//!
//! MODEL.gguf defaults to Qwen2.5-Coder-0.5B-Instruct Q4_K_M as
//! `scripts/fetch-models.sh` leaves it (`$GLLM_TEST_MODELS`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| {
        let base = std::env::var("GLLM_TEST_MODELS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/gllm-test-models",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{base}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    let message = args
        .next()
        .unwrap_or_else(|| "Write a Python function that returns the factorial of n.".into());
    let generator = gllm::Options::new().cpu().generator(&model).await?;
    let mut params = generator.default_params();
    params.temperature = 0.0;
    params.max_tokens = 128;
    let answer = generator
        .chat(vec![gllm::ChatMessage::new("user", message)], params)
        .await?;
    println!("{}", answer.text);
    eprintln!(
        "({} tokens, {:?})",
        answer.token_ids.len(),
        answer.finish_reason
    );
    Ok(())
}
