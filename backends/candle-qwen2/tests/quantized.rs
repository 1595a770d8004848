//! Every GGUF block type the backend computes with, checked three ways on one
//! synthesized model (hidden 256, so Q4_K applies): this crate's packed kernels against
//! candle's own quantized kernels (the same arithmetic, written independently), both
//! against exact f32 arithmetic on the dequantized weights, and that against the f32
//! safetensors model the GGUF files were quantized from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use candle_qwen2::FACTORY;
use candle_qwen2::synth::{SynthFormat, synthesize};
use gllm_api::{BackendFactory, Device, InferenceBackend, ModelSpec, Task, WeightFormat};
use gllm_testkit::cosine;
use gllm_testkit::generate::argmax;

const CONFIG: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_size": 256,
  "intermediate_size": 512,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "vocab_size": 512,
  "max_position_embeddings": 512,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "float32"
}"#;

const PROMPT: [u32; 10] = [17, 301, 5, 88, 460, 2, 99, 250, 13, 7];

/// The synthesized model directory (written once per test process, under cargo's
/// scratch directory for tests; tests run in parallel and wait for the first to write it).
fn model_dir() -> Result<&'static Path> {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candle-qwen2-quantized");
        let config = dir.join("source-config.json");
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&config, CONFIG))
            .map_err(|e| e.to_string())?;
        synthesize(&config, &dir, &SynthFormat::ALL).map_err(|e| e.to_string())?;
        Ok(dir)
    });
    dir.as_deref()
        .map_err(|e| anyhow::anyhow!("synthesizing the test model: {e}"))
}

fn load(path: &Path, options: &[(&str, &str)]) -> Result<Box<dyn InferenceBackend>> {
    let format = if path.extension().is_some_and(|e| e == "gguf") {
        WeightFormat::Gguf
    } else {
        WeightFormat::Safetensors
    };
    let spec = ModelSpec {
        id: "quantized-test".into(),
        task: Task::Generate,
        path: path.to_path_buf(),
        format,
        architecture: "qwen2".into(),
        dtype: None,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    Ok(FACTORY.load(&spec, Device::CPU)?)
}

/// Logits after the prompt, then after each of 4 greedy steps (the KV-cache path).
fn run(b: &dyn InferenceBackend) -> Result<Vec<Vec<f32>>> {
    let mut cache = b.new_cache()?;
    let mut out = vec![b.forward(cache.as_mut(), &PROMPT)?];
    for _ in 0..4 {
        let next = argmax(out.last().context("logits")?);
        out.push(b.forward(cache.as_mut(), &[next])?);
    }
    Ok(out)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

/// Checks one GGUF file. `exact_as_candle`: this crate computes exactly what candle's
/// kernel does, up to f32 summation order. `min_cos`: cosine to the f32 model the file
/// was quantized from (random ±0.05 weights lose more to 4 bits than trained ones do).
fn check(format: SynthFormat, exact_as_candle: bool, min_cos: f32) -> Result<()> {
    let dir = model_dir()?;
    let file = dir.join(format.file_name());
    let ours = run(load(&file, &[])?.as_ref())?;
    let candle = run(load(&file, &[("candle_qmatmul", "true")])?.as_ref())?;
    let exact = run(load(&file, &[("dequantize", "true")])?.as_ref())?;
    let source = run(load(dir, &[])?.as_ref())?;
    for step in 0..ours.len() {
        // Only the activations' 8-bit quantization separates these.
        let c = cosine(&ours[step], &exact[step]);
        ensure!(
            c >= 0.9998,
            "{format:?} step {step}: cosine to f32 compute {c} < 0.9998"
        );
        // candle quantizes activations for some types a little differently from ggml
        // (which gllm-kernels follows), so the two agree to cosine, and exactly where the
        // arithmetic is the same.
        let c = cosine(&ours[step], &candle[step]);
        ensure!(
            c >= 0.9998,
            "{format:?} step {step}: cosine to candle's kernels {c} < 0.9998"
        );
        if exact_as_candle {
            let scale = max_abs(&candle[step]);
            for (j, (a, b)) in ours[step].iter().zip(&candle[step]).enumerate() {
                ensure!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{format:?} step {step} logit {j}: ours {a} vs candle {b} (max |logit| {scale})"
                );
            }
        }
    }
    // The weights' quantization: the prompt's logits against the unquantized model.
    let c = cosine(&exact[0], &source[0]);
    ensure!(
        c >= min_cos,
        "{format:?}: cosine to the f32 source {c} < {min_cos}"
    );
    Ok(())
}

#[test]
fn q8_0_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ8_0, false, 0.9999)
}

#[test]
fn q4_0_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ4_0, true, 0.97)
}

#[test]
fn q4_1_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ4_1, false, 0.97)
}

#[test]
fn q5_0_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ5_0, false, 0.99)
}

#[test]
fn q5_1_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ5_1, false, 0.99)
}

#[test]
fn q2_k_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ2K, false, 0.8)
}

#[test]
fn q3_k_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ3K, false, 0.9)
}

#[test]
fn q4_k_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ4K, false, 0.98)
}

#[test]
fn q5_k_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ5K, false, 0.99)
}

#[test]
fn q6_k_kernels_agree() -> Result<()> {
    check(SynthFormat::GgufQ6K, false, 0.999)
}

#[test]
fn f16_matches_the_source() -> Result<()> {
    let dir = model_dir()?;
    let half = run(load(&dir.join(SynthFormat::GgufF16.file_name()), &[])?.as_ref())?;
    let source = run(load(dir, &[])?.as_ref())?;
    for (step, (h, s)) in half.iter().zip(&source).enumerate() {
        let c = cosine(h, s);
        ensure!(c >= 0.99999, "f16 step {step}: cosine {c}");
    }
    Ok(())
}
