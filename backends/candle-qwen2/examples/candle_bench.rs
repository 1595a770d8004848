//! llama-bench-style figures for one model: prefill tokens/s for a P-token prompt, then
//! decode tokens/s for N tokens after it (greedy, one token per step).
//!
//! `cargo run --release -p candle-qwen2 --example candle_bench -- MODEL [P=128] [N=64] [dtype]`
//! MODEL: a safetensors model directory or a .gguf file; dtype: f32 (default), bf16, f16.
//! Threads: `RAYON_NUM_THREADS` (default: all cores). Options: `BENCH_OPTIONS=k=v,k=v`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use gllm_api::{DType, Device, InferenceBackend, ModelSpec, Task, WeightFormat};
use gllm_testkit::generate::time_prefill_decode;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model) = args.first() else {
        anyhow::bail!("usage: candle_bench MODEL [PROMPT_TOKENS] [DECODE_TOKENS] [f32|bf16|f16]");
    };
    let p: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let dtype = match args.get(3).map(String::as_str) {
        None | Some("f32") => None,
        Some("bf16") => Some(DType::Bf16),
        Some("f16") => Some(DType::F16),
        Some(o) => anyhow::bail!("unknown dtype {o}"),
    };
    let path = PathBuf::from(model);
    let format = if path.extension().is_some_and(|e| e == "gguf") {
        WeightFormat::Gguf
    } else {
        WeightFormat::Safetensors
    };
    let spec = ModelSpec {
        id: "bench".into(),
        task: Task::Generate,
        path: path.clone(),
        format,
        architecture: "qwen2".into(),
        dtype,
        // Manifest options as KEY=VALUE,KEY=VALUE (e.g. candle_qmatmul=true).
        options: std::env::var("BENCH_OPTIONS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let t = Instant::now();
    let b = candle_qwen2::load(&spec, Device::CPU)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut cpu0 = 0.0;
    let (prefill_s, decode_s) = time_prefill_decode(&b, p, n, &mut || cpu0 = cpu_seconds())?;
    let decode_cpu = cpu_seconds() - cpu0;
    println!(
        "model {} | {:?} | load {:.2}s | prefill {p} tok: {:.1} tok/s | decode {n} tok: {:.2} tok/s",
        path.display(),
        b.info().dtype,
        load_s,
        p as f64 / prefill_s,
        n as f64 / decode_s
    );
    // On a busy machine wall time mostly measures the neighbours: CPU seconds per token
    // (all threads together) say what the work itself costs.
    println!(
        "  decode CPU time: {:.1} ms/token (all threads)",
        1e3 * decode_cpu / n as f64
    );
    Ok(())
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
