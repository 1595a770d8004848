//! Shared test logic for gllm: where the fixtures are, how to read their references,
//! how to compare numbers with stated tolerances, the conformance suites that
//! every backend of a task runs (one copy of each check, not one per backend), and
//! the edited model copies of the strict-loading tests ([`strict`]) with the decoders'
//! schema-driven suite ([`decoder_schema`]), and checks on a
//! finished `gllm` process ([`process`]).
//!
//! Missing fixtures or models are a loud failure, never a skip.

pub mod coder;
pub mod decoder_schema;
pub mod embed;
pub mod generate;
pub mod process;
pub mod strict;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A manifest (`models.toml` text) serving three fixture models on the CPU, one per
/// task: `tiny-bert` (embed, burn-bert), `tiny-cross-encoder` (rerank, burn-bert) and
/// `tiny-qwen2` (generate, candle-qwen2). The server's tests and its fuzz target run on it.
pub fn fixture_manifest() -> String {
    let f = |name: &str| fixture(name).display().to_string();
    format!(
        r#"[defaults]
devices = ["cpu"]

[[models]]
id = "tiny-bert"
task = "embed"
path = "{bert}"
backends = ["burn-bert"]

[[models]]
id = "tiny-cross-encoder"
task = "rerank"
path = "{ce}"
backends = ["burn-bert"]

[[models]]
id = "tiny-qwen2"
task = "generate"
path = "{qwen}"
backends = ["candle-qwen2"]
devices = ["cpu"]
"#,
        bert = f("tiny-bert"),
        ce = f("tiny-cross-encoder"),
        qwen = f("tiny-qwen2"),
    )
}

/// `../shared/fixtures` beside the workspace (override: `GLLM_FIXTURES`).
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var_os("GLLM_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/fixtures"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "fixtures not found at {} (set GLLM_FIXTURES or put shared/ beside the checkout)",
        dir.display()
    );
    dir
}

/// One fixture: `fixture("tiny-bert")`.
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(name);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The directory `fetch-real-models.sh` filled: `$GLLM_TEST_MODELS`, else
/// `~/.cache/gllm-test-models`. Panics (the test fails) when a model is missing.
pub fn real_model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("GLLM_TEST_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/gllm-test-models")
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "real model {} is missing: run `../shared/fixtures/fetch-real-models.sh` (or scripts/fetch-models.sh) first",
        p.display()
    );
    p
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A tensor of a reference safetensors file as f32 (any float dtype on disk), with its shape.
pub fn read_tensor_f32(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("parsing {}", path.display()))?;
    let t = st
        .tensor(name)
        .with_context(|| format!("tensor {name} in {}", path.display()))?;
    let data = t.data();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        safetensors::Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("tensor {name}: unsupported dtype {other:?}"),
    };
    Ok((t.shape().to_vec(), values))
}

/// Largest |a - b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Fails with `what`, the largest difference and its position when `got` is not within `tol` of `want`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} != reference {}",
        got.len(),
        want.len()
    );
    let (mut worst, mut at) = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    assert!(
        worst <= tol,
        "{what}: max |diff| {worst:e} at index {at} (got {}, want {}) exceeds tolerance {tol:e}",
        got[at],
        want[at]
    );
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)) as f32
}

/// A JSON array of integers as u32s.
pub fn json_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON array of numbers as f32s.
pub fn json_f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON array of strings (a reference's sentences or documents); panics, naming
/// the value, when it is anything else.
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or_else(|| panic!("not an array of strings: {v}"))
}

/// Checks rerank results in JSON (`[{"index", FIELD}]`): one per reference value, each
/// `field` within `tol` of `want[index]`.
pub fn assert_ranked(what: &str, results: &serde_json::Value, field: &str, want: &[f32], tol: f32) {
    let results = results
        .as_array()
        .unwrap_or_else(|| panic!("{what}: results are not an array: {results}"));
    assert_eq!(results.len(), want.len(), "{what}: result count");
    for r in results {
        let i = r["index"].as_u64().expect("index") as usize;
        let got = r[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no `{field}` in {r}")) as f32;
        assert!(
            (got - want[i]).abs() <= tol,
            "{what}: {field} {i}: {got} vs {}",
            want[i]
        );
    }
}
