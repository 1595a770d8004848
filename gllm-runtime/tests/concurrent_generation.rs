//! Concurrent generations on one model: their decode steps run in shared batches
//! (`InferenceBackend::forward_batch`), and every generation still gives exactly the
//! tokens it gives alone (transformers' greedy reference for tiny-qwen2).

mod support;

use anyhow::{Context, Result, ensure};
use gllm_runtime::{GenerateRequest, SamplingParams};
use gllm_testkit::{fixture, json_u32s, read_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn candle_qwen2_batches_concurrent_generations() -> Result<()> {
    concurrent_greedy_generations_match_the_reference_and_share_batches("candle-qwen2").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burn_qwen2_batches_concurrent_generations() -> Result<()> {
    concurrent_greedy_generations_match_the_reference_and_share_batches("burn-qwen2").await
}

async fn concurrent_greedy_generations_match_the_reference_and_share_batches(
    backend: &str,
) -> Result<()> {
    let reference = read_json(&fixture("tiny-qwen2").join("reference.json"))?;
    let cases = reference["cases"].as_array().context("cases")?;
    let h = support::tiny_qwen2_runtime(backend)
        .generator("qwen")
        .await?;
    ensure!(
        h.active().backend == backend,
        "loaded {}",
        h.active().backend
    );
    // Each case four times over: 16 generations at once.
    let jobs: Vec<_> = (0..4)
        .flat_map(|_| cases.iter())
        .map(|case| {
            let h = h.clone();
            let prompt = case["prompt"].as_str().unwrap_or_default().to_string();
            let want = json_u32s(&case["greedy_new_ids"]);
            tokio::spawn(async move {
                let g = h
                    .generate(GenerateRequest {
                        prompt: prompt.clone(),
                        params: SamplingParams::greedy(24),
                    })
                    .await?;
                ensure!(
                    g.token_ids == want,
                    "{prompt:?}: {:?} != {want:?}",
                    g.token_ids
                );
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for j in jobs {
        j.await??;
    }
    let active = h.active();
    ensure!(
        active.batched_steps > active.step_batches,
        "{backend}: no decode step shared a batch ({} steps in {} batches)",
        active.batched_steps,
        active.step_batches
    );
    Ok(())
}
