//! Embedding throughput of burn-bert on a corpus, as the runtime calls it
//! (batches of `--batch` sentences per `embed` call), plus single-query latency.
//!
//! ```text
//! cargo run --release -p burn-bert --example embed_bench -- \
//!     [MODEL_DIR] [CORPUS] [BATCH] [cpu|gpu]
//! ```
//! (an empty argument takes the default). `BENCH_ROUNDS` sets the number of timed passes (3).
//! Defaults: all-MiniLM-L6-v2 from `fetch-real-models.sh`, `../shared/bench/corpus.txt`, 32, cpu.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn_bert::BurnBert;
use gllm_api::{Device, EncodedInput, InferenceBackend, Task};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).filter(|a| !a.is_empty());
    let model = arg(0)
        .map(PathBuf::from)
        .unwrap_or_else(|| gllm_testkit::real_model("all-MiniLM-L6-v2"));
    let corpus = arg(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| gllm_testkit::workspace_root().join("../shared/bench/corpus.txt"));
    let batch: usize = arg(2).map_or(Ok(32), |b| b.parse())?;
    let device = match arg(3).map(String::as_str) {
        Some("gpu") => Device::gpu(0),
        _ => Device::CPU,
    };

    let mut tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    // The backend pads per batch itself; the file's fixed padding would hide that.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
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
    let rounds: usize = std::env::var("BENCH_ROUNDS").map_or(Ok(3), |r| r.parse())?;
    for round in 0..rounds {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for chunk in inputs.chunks(batch) {
            backend.embed(chunk)?;
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        println!(
            "round {round}: {} sentences, {tokens} tokens in {secs:.3} s: {:.1} sentences/s, {:.0} tokens/s ({cpu:.2} CPU-seconds)",
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

/// CPU time (user + system) of this process so far, from /proc (0 where unavailable):
/// on a busy machine it shows the work done apart from waiting for a core.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
