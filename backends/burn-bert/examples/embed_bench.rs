//! Embedding throughput of burn-bert on a corpus, as the runtime calls it
//! (batches of `--batch` sentences per `embed` call), plus single-query latency.
//!
//! ```text
//! cargo run --release -p burn-bert --example embed_bench -- \
//!     [MODEL_DIR] [CORPUS] [BATCH] [cpu|gpu]
//! ```
//! Defaults: all-MiniLM-L6-v2 from `fetch-real-models.sh`, `../shared/bench/corpus.txt`, 32, cpu.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn_bert::BurnBert;
use gllm_api::{Device, EncodedInput, InferenceBackend, Task};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| gllm_testkit::real_model("all-MiniLM-L6-v2"));
    let corpus = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| gllm_testkit::workspace_root().join("../shared/bench/corpus.txt"));
    let batch: usize = args.get(2).map_or(Ok(32), |b| b.parse())?;
    let device = match args.get(3).map(String::as_str) {
        Some("gpu") => Device::gpu(0),
        _ => Device::CPU,
    };

    let tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let text = std::fs::read_to_string(&corpus).with_context(|| corpus.display().to_string())?;
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let inputs: Vec<EncodedInput> = sentences
        .iter()
        .map(|s| {
            let enc = tokenizer
                .encode(*s, true)
                .map_err(|e| anyhow::anyhow!("tokenize: {e}"))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > 256 {
                ids.truncate(255);
                ids.push(102);
            }
            Ok(EncodedInput::new(ids))
        })
        .collect::<Result<_>>()?;
    let tokens: usize = inputs.iter().map(|i| i.ids.len()).sum();

    let t = Instant::now();
    let backend = BurnBert::load_dir(&model, Task::Embed, device)?;
    println!(
        "loaded {} on {device} in {:.2?}",
        model.display(),
        t.elapsed()
    );

    // Warm-up (allocator, page faults, GPU kernel compilation).
    backend.embed(&inputs[..batch.min(inputs.len())])?;

    let mut best = f64::MAX;
    for round in 0..3 {
        let t = Instant::now();
        for chunk in inputs.chunks(batch) {
            backend.embed(chunk)?;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {} sentences, {tokens} tokens in {secs:.3} s: {:.1} sentences/s, {:.0} tokens/s",
            inputs.len(),
            inputs.len() as f64 / secs,
            tokens as f64 / secs
        );
        best = best.min(secs);
    }
    println!(
        "best: {:.1} sentences/s, {:.0} tokens/s (batch {batch}, mean {:.1} tokens/sentence)",
        inputs.len() as f64 / best,
        tokens as f64 / best,
        tokens as f64 / inputs.len() as f64
    );

    let query = tokenizer
        .encode("how do I bake sourdough bread at home?", true)
        .map_err(|e| anyhow::anyhow!("tokenize: {e}"))?;
    let query = [EncodedInput::new(query.get_ids().to_vec())];
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        backend.embed(&query)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "single query latency: median {:.2} ms, min {:.2} ms",
        lat[lat.len() / 2],
        lat[0]
    );
    Ok(())
}
