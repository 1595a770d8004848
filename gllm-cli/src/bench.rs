//! `gllm bench`: throughput figures of this machine, measured now. Only what was
//! measured is printed; peers are compared by the scripts that run them in the same
//! run (`../shared/bench/compare-llama-cpp.sh`, `scripts/bench.sh --peers`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gllm_runtime::Runtime;

/// Embeds the corpus (one sentence per line) and prints sentences/s, tokens/s and query latency.
pub fn embed(runtime: &Runtime, model: &str, corpus: &Path, repeat: usize) -> Result<()> {
    let text =
        std::fs::read_to_string(corpus).with_context(|| format!("reading {}", corpus.display()))?;
    let sentences: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if sentences.is_empty() {
        bail!("{} has no sentences", corpus.display());
    }
    let handle = runtime.embedder_blocking(model)?;
    let active = handle.active();
    println!(
        "model {model}: {} on {} ({}), corpus {} ({} sentences), length-sorted batches of 32",
        active.backend,
        active.device,
        active.info.dtype.as_str(),
        corpus.display(),
        sentences.len()
    );
    // warm-up (allocations, kernel selection)
    handle.embed_blocking(&sentences[..sentences.len().min(64)])?;
    let mut best = f64::INFINITY;
    let mut tokens = 0;
    for run in 1..=repeat.max(1) {
        let start = Instant::now();
        let rows = handle.embed_blocking(&sentences)?;
        let secs = start.elapsed().as_secs_f64();
        tokens = rows.iter().map(|r| r.tokens).sum::<usize>();
        println!(
            "  run {run}: {:.2} s, {:.1} sentences/s, {:.0} tokens/s",
            secs,
            sentences.len() as f64 / secs,
            tokens as f64 / secs
        );
        best = best.min(secs);
    }
    let query = vec!["How do I bake sourdough bread at home?".to_string()];
    let mut lat: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            handle
                .embed_blocking(&query)
                .map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    lat.sort_by(f64::total_cmp);
    println!();
    println!("| engine | sentences/s | tokens/s | single query (median) |");
    println!("|---|---|---|---|");
    println!(
        "| gllm {} ({}) | {:.1} | {:.0} | {:.1} ms |",
        active.backend,
        active.device,
        sentences.len() as f64 / best,
        tokens as f64 / best,
        lat[lat.len() / 2]
    );
    Ok(())
}

/// Prefill and decode tokens/s, llama-bench style.
/// What `gllm bench generate` runs.
#[derive(Debug, Clone, Copy)]
pub struct GenerateShape {
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Decode steps after it.
    pub decode_tokens: usize,
    /// Sequences at once.
    pub streams: usize,
}

/// Runs the benchmark; `json` prints one JSON object instead of the progress and table.
pub fn generate(
    runtime: &Runtime,
    model: &str,
    shape: GenerateShape,
    repeat: usize,
    json: bool,
) -> Result<()> {
    let GenerateShape {
        prompt_tokens,
        decode_tokens,
        streams,
    } = shape;
    let handle = runtime.generator_blocking(model)?;
    let active = handle.active();
    let each = if streams > 1 {
        format!(" (each of {streams} sequences at once)")
    } else {
        String::new()
    };
    if !json {
        println!(
            "model {model}: {} on {} ({}), prefill {prompt_tokens} tokens, decode {decode_tokens} tokens{each}",
            active.backend,
            active.device,
            active.info.dtype.as_str()
        );
    }
    handle.bench_streams_blocking(16, 4, streams)?; // warm-up
    let (mut best_pp, mut best_tg) = (0.0f64, 0.0f64);
    let mut runs = Vec::new();
    for run in 1..=repeat.max(1) {
        let b = handle.bench_streams_blocking(prompt_tokens, decode_tokens, streams)?;
        let (pp, tg) = (b.prefill_tokens_per_s(), b.decode_tokens_per_s());
        if !json {
            println!("  run {run}: prefill {pp:.1} tok/s, decode {tg:.1} tok/s");
        }
        runs.push(serde_json::json!({"prefill_tokens_per_s": pp, "decode_tokens_per_s": tg}));
        best_pp = best_pp.max(pp);
        best_tg = best_tg.max(tg);
    }
    if json {
        let out = serde_json::json!({
            "model": model,
            "backend": active.backend,
            "device": active.device.to_string(),
            "dtype": active.info.dtype.as_str(),
            "threads": rayon_threads(),
            "prompt_tokens": prompt_tokens,
            "decode_tokens": decode_tokens,
            "streams": streams,
            "prefill_tokens_per_s": best_pp,
            "decode_tokens_per_s": best_tg,
            "runs": runs,
        });
        println!("{out}");
        return Ok(());
    }
    if streams > 1 {
        let a = handle.active();
        if a.step_batches > 0 {
            println!(
                "  decode steps ran in batches of {:.1} on average",
                a.batched_steps as f64 / a.step_batches as f64
            );
        }
    }
    println!();
    println!("| engine | prefill tok/s (pp{prompt_tokens}) | decode tok/s (tg{decode_tokens}) |");
    println!("|---|---|---|");
    let streams_note = if streams > 1 {
        format!(", {streams} streams")
    } else {
        String::new()
    };
    println!(
        "| gllm {} ({}{streams_note}) | {best_pp:.1} | {best_tg:.1} |",
        active.backend, active.device
    );
    Ok(())
}

/// The worker threads the CPU kernels use (`RAYON_NUM_THREADS`, else every core).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
