//! llama-bench-style figures on the Qwen2-0.5B shape with random weights: prefill
//! tokens/s for a P-token prompt, then decode tokens/s for N tokens after it (greedy,
//! one token per step), for burn-qwen2 and, in the same run, candle-qwen2.
//!
//! `cargo run --release -p burn-qwen2 --example burn_qwen2_bench -- [MODEL_DIR] [P=128] [N=64] [f32|bf16|f16|all] [burn|candle|both]`
//!
//! MODEL_DIR defaults to `$TMPDIR/gllm-qwen2-0.5b-synth`, synthesized (bf16 safetensors,
//! with `candle_qwen2::synth`) from `../shared/bench/qwen2-0.5b.config.json` when absent.
//! Threads: `RAYON_NUM_THREADS` (default: all cores).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use gllm_api::{DType, Device, InferenceBackend, ModelSpec, Task, WeightFormat};
use gllm_testkit::generate::time_prefill_decode;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.first().filter(|a| !a.is_empty() && *a != "-") {
        Some(d) => PathBuf::from(d),
        None => default_model()?,
    };
    let p: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let dtypes: Vec<Option<DType>> = match args.get(3).map(String::as_str) {
        None | Some("f32") => vec![None],
        Some("bf16") => vec![Some(DType::Bf16)],
        Some("f16") => vec![Some(DType::F16)],
        Some("all") => vec![None, Some(DType::Bf16)],
        Some(o) => bail!("unknown dtype {o}"),
    };
    let which = args.get(4).map(String::as_str).unwrap_or("both");
    for dtype in dtypes {
        let spec = ModelSpec {
            id: "bench".into(),
            task: Task::Generate,
            path: dir.clone(),
            format: WeightFormat::Safetensors,
            architecture: "qwen2".into(),
            dtype,
            options: BTreeMap::new(),
        };
        if which != "candle" {
            let t = Instant::now();
            let b = burn_qwen2::BurnQwen2::load(&spec, Device::CPU)?;
            report("burn-qwen2", &b, t.elapsed().as_secs_f64(), p, n)?;
        }
        if which != "burn" {
            let t = Instant::now();
            let b = candle_qwen2::load(&spec, Device::CPU)?;
            report("candle-qwen2", &b, t.elapsed().as_secs_f64(), p, n)?;
        }
    }
    Ok(())
}

/// The synthesized Qwen2-0.5B-shaped model directory, written on first use.
fn default_model() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("gllm-qwen2-0.5b-synth");
    if !dir.join("model.safetensors").is_file() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/bench/qwen2-0.5b.config.json");
        eprintln!("synthesizing {} from {}", dir.display(), config.display());
        candle_qwen2::synth::synthesize(
            &config,
            &dir,
            &[candle_qwen2::synth::SynthFormat::Safetensors],
        )
        .context("synthesizing the benchmark model")?;
    }
    Ok(dir)
}

fn report(
    name: &str,
    b: &dyn InferenceBackend,
    load_s: f64,
    p: usize,
    n: usize,
) -> anyhow::Result<()> {
    let (prefill_s, decode_s) = time_prefill_decode(b, p, n, &mut || {})?;
    println!(
        "{name:<13} | {:<4} | load {load_s:5.2}s | prefill {p} tok: {:7.1} tok/s | decode {n} tok: {:6.2} tok/s",
        b.info().dtype.as_str(),
        p as f64 / prefill_s,
        n as f64 / decode_s
    );
    Ok(())
}
