//! Random-weight Qwen2 / Qwen3 models for benchmarks: decode speed depends on the shape, not on
//! the values, so a model synthesized from a published `config.json` measures what the
//! real one would.
//!
//! Weights are uniform in ±0.05 (norm weights 1), drawn from a fixed-seed generator per
//! tensor, so every format written from one config holds the same values (up to its
//! rounding or quantization).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use gllm_api::BackendError;

use gllm_arch::schema::{HfNaming, expected, gguf_name, hf_name};
use gllm_arch::{DecoderConfig, Part};

/// A file format [`synthesize`] can write: safetensors, or GGUF with every matrix of
/// one type (vectors stay f32, as llama.cpp stores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthFormat {
    /// `config.json` + `model.safetensors` in the config's `torch_dtype` (bf16, f16 or f32).
    Safetensors,
    /// `model-f16.gguf`.
    GgufF16,
    /// `model-q8_0.gguf`.
    GgufQ8_0,
    /// `model-q4_0.gguf`.
    GgufQ4_0,
    /// `model-q4_1.gguf`.
    GgufQ4_1,
    /// `model-q5_0.gguf`.
    GgufQ5_0,
    /// `model-q5_1.gguf`.
    GgufQ5_1,
    /// `model-q2_k.gguf` (k-quants need widths that are multiples of 256).
    GgufQ2K,
    /// `model-q3_k.gguf`.
    GgufQ3K,
    /// `model-q4_k.gguf`.
    GgufQ4K,
    /// `model-q5_k.gguf`.
    GgufQ5K,
    /// `model-q6_k.gguf`.
    GgufQ6K,
}

/// Each format, its short name and its GGUF matrix type.
const FORMATS: [(SynthFormat, &str, Option<GgmlDType>); 12] = [
    (SynthFormat::Safetensors, "safetensors", None),
    (SynthFormat::GgufF16, "f16", Some(GgmlDType::F16)),
    (SynthFormat::GgufQ8_0, "q8_0", Some(GgmlDType::Q8_0)),
    (SynthFormat::GgufQ4_0, "q4_0", Some(GgmlDType::Q4_0)),
    (SynthFormat::GgufQ4_1, "q4_1", Some(GgmlDType::Q4_1)),
    (SynthFormat::GgufQ5_0, "q5_0", Some(GgmlDType::Q5_0)),
    (SynthFormat::GgufQ5_1, "q5_1", Some(GgmlDType::Q5_1)),
    (SynthFormat::GgufQ2K, "q2_k", Some(GgmlDType::Q2K)),
    (SynthFormat::GgufQ3K, "q3_k", Some(GgmlDType::Q3K)),
    (SynthFormat::GgufQ4K, "q4_k", Some(GgmlDType::Q4K)),
    (SynthFormat::GgufQ5K, "q5_k", Some(GgmlDType::Q5K)),
    (SynthFormat::GgufQ6K, "q6_k", Some(GgmlDType::Q6K)),
];

impl SynthFormat {
    /// Every format.
    pub const ALL: [SynthFormat; 12] = [
        SynthFormat::Safetensors,
        SynthFormat::GgufF16,
        SynthFormat::GgufQ8_0,
        SynthFormat::GgufQ4_0,
        SynthFormat::GgufQ4_1,
        SynthFormat::GgufQ5_0,
        SynthFormat::GgufQ5_1,
        SynthFormat::GgufQ2K,
        SynthFormat::GgufQ3K,
        SynthFormat::GgufQ4K,
        SynthFormat::GgufQ5K,
        SynthFormat::GgufQ6K,
    ];

    fn entry(self) -> (&'static str, Option<GgmlDType>) {
        FORMATS
            .iter()
            .find(|(f, _, _)| *f == self)
            .map(|(_, name, ty)| (*name, *ty))
            .unwrap_or(("safetensors", None))
    }

    /// The format's short name: `safetensors`, `f16`, `q8_0`, `q4_0`, `q4_1`, `q5_0`,
    /// `q5_1`, `q2_k`, `q3_k`, `q4_k`, `q5_k`, `q6_k`.
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The GGUF type of its matrices (`None` for safetensors).
    pub fn gguf_type(self) -> Option<GgmlDType> {
        self.entry().1
    }

    /// Parses [`SynthFormat::as_str`] (also `gguf-q8_0` style).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("gguf-").unwrap_or(&s);
        SynthFormat::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The file (or directory, for safetensors) it writes under the output directory.
    pub fn file_name(self) -> String {
        match self {
            SynthFormat::Safetensors => "model.safetensors".into(),
            f => format!("model-{}.gguf", f.as_str()),
        }
    }
}

/// Why a model could not be synthesized.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Reading the config or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The config does not describe a supported decoder.
    #[error("config: {0}")]
    Config(#[from] BackendError),
    /// Quantizing or writing GGUF failed.
    #[error("gguf: {0}")]
    Candle(#[from] candle_core::Error),
    /// Writing safetensors failed.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// The config's `torch_dtype` is not bf16, f16 or f32.
    #[error("unsupported torch_dtype `{0}`")]
    Dtype(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SplitMix64: a small, fast, seedable generator (no extra dependency needed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn seed_of(name: &str) -> u64 {
    // FNV-1a of the (Hugging Face) tensor name.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn is_norm(part: Part) -> bool {
    use gllm_arch::LayerPart::*;
    matches!(
        part,
        Part::Norm | Part::Layer(_, InputNorm | PostNorm | QNorm | KNorm)
    )
}

/// The values of one tensor.
fn values(part: Part, len: usize) -> Vec<f32> {
    if is_norm(part) {
        return vec![1.0; len];
    }
    let mut rng = Rng::new(seed_of(&hf_name(part, HfNaming::CausalLm)));
    (0..len).map(|_| 0.05 * rng.unit()).collect()
}

/// Writes a random-weight model of the shape `config_json` describes into `out_dir`, in
/// each of `formats` (file names from [`SynthFormat::file_name`]); `config.json` is
/// copied there too, so `out_dir` is a loadable safetensors model directory. A
/// `tokenizer.json` already in `out_dir` goes into the GGUF files' metadata. Returns
/// the paths written.
pub fn synthesize(
    config_json: &Path,
    out_dir: &Path,
    formats: &[SynthFormat],
) -> Result<Vec<PathBuf>, SynthError> {
    let text = std::fs::read_to_string(config_json).map_err(io_err(config_json))?;
    let cfg = DecoderConfig::from_hf_json(&text)?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| BackendError::invalid_model(format!("bad config.json: {e}")))?;
    let torch_dtype = raw
        .get("torch_dtype")
        .or_else(|| raw.get("dtype"))
        .and_then(|v| v.as_str())
        .unwrap_or("float32")
        .to_string();
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let cfg_out = out_dir.join("config.json");
    std::fs::write(&cfg_out, &text).map_err(io_err(&cfg_out))?;
    let mut written = vec![cfg_out];
    let vocab = tokenizer_metadata(&out_dir.join("tokenizer.json"), cfg.vocab_size)?;
    for &f in formats {
        let path = out_dir.join(f.file_name());
        match f.gguf_type() {
            None => write_safetensors(&cfg, &torch_dtype, &path)?,
            Some(ty) => write_gguf(&cfg, ty, &vocab, &path)?,
        }
        written.push(path);
    }
    Ok(written)
}

fn write_safetensors(
    cfg: &DecoderConfig,
    torch_dtype: &str,
    path: &Path,
) -> Result<(), SynthError> {
    use safetensors::Dtype;
    let dtype = match torch_dtype {
        "bfloat16" => Dtype::BF16,
        "float16" => Dtype::F16,
        "float32" => Dtype::F32,
        other => return Err(SynthError::Dtype(other.to_string())),
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (part, shape) in expected(cfg) {
        let v = values(part, shape.iter().product());
        let bytes: Vec<u8> = match dtype {
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        tensors.push((hf_name(part, HfNaming::CausalLm), shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(dtype, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), path)?;
    Ok(())
}

/// Writes one GGUF file; `vocab` is the tokenizer metadata (see [`tokenizer_metadata`]).
fn write_gguf(
    cfg: &DecoderConfig,
    dtype: GgmlDType,
    vocab: &[(String, Value)],
    path: &Path,
) -> Result<(), SynthError> {
    let arch = cfg.architecture.name();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (part, shape) in expected(cfg) {
        let v = values(part, shape.iter().product());
        let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?;
        // Vectors (norms, biases) stay f32, as llama.cpp stores them.
        let q = if shape.len() == 1 {
            QTensor::quantize(&t, GgmlDType::F32)?
        } else {
            QTensor::quantize(&t, dtype)?
        };
        tensors.push((gguf_name(part), q));
    }
    let u32v = |x: usize| Value::U32(x as u32);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String(format!("synthetic {arch} (random weights)")),
        ),
        ("general.alignment".into(), Value::U32(32)),
        (format!("{arch}.block_count"), u32v(cfg.num_hidden_layers)),
        (
            format!("{arch}.context_length"),
            u32v(cfg.max_position_embeddings),
        ),
        (format!("{arch}.embedding_length"), u32v(cfg.hidden_size)),
        (
            format!("{arch}.feed_forward_length"),
            u32v(cfg.intermediate_size),
        ),
        (
            format!("{arch}.attention.head_count"),
            u32v(cfg.num_attention_heads),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            u32v(cfg.num_key_value_heads),
        ),
        (format!("{arch}.attention.key_length"), u32v(cfg.head_dim)),
        (format!("{arch}.attention.value_length"), u32v(cfg.head_dim)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(cfg.rope_theta as f32),
        ),
    ];
    meta.extend(vocab.iter().cloned());
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let file = File::create(path).map_err(io_err(path))?;
    let mut w = BufWriter::new(file);
    candle_core::quantized::gguf_file::write(&mut w, &meta_refs, &tensor_refs)?;
    std::io::Write::flush(&mut w).map_err(io_err(path))?;
    Ok(())
}

/// llama.cpp's tokenizer metadata (`tokenizer.ggml.*`, as `convert_hf_to_gguf.py` writes
/// it for a byte-level BPE tokenizer, padded to `vocab_size` tokens) from the
/// `tokenizer.json` beside the model, if there is one: llama.cpp loads no model without
/// a vocabulary. Nothing when the file is absent.
fn tokenizer_metadata(path: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>, SynthError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |what: &str| BackendError::invalid_model(format!("{}: {what}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let vocab = json["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab (only BPE tokenizers are supported)"))?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: Option<u64>, tok: &str, ty: i32| {
        if let Some(slot) = id.and_then(|i| tokens.get_mut(i as usize)) {
            *slot = Some((tok.to_string(), ty));
        }
    };
    for (tok, id) in vocab {
        place(id.as_u64(), tok, 1);
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let special = added["special"].as_bool().unwrap_or(false);
        place(
            added["id"].as_u64(),
            added["content"].as_str().unwrap_or(""),
            if special { 3 } else { 4 },
        );
    }
    let (mut names, mut types) = (
        Vec::with_capacity(vocab_size),
        Vec::with_capacity(vocab_size),
    );
    for (i, t) in tokens.into_iter().enumerate() {
        let (name, ty) = t.unwrap_or_else(|| (format!("[PAD{i}]"), 5));
        names.push(Value::String(name));
        types.push(Value::I32(ty));
    }
    let merges: Vec<Value> = json["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => Some(
                p.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .map(Value::String)
        .collect();
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(names)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_their_names() {
        for f in SynthFormat::ALL {
            assert_eq!(SynthFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(SynthFormat::parse("gguf-q4_0"), Some(SynthFormat::GgufQ4_0));
    }
}
