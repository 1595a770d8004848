//! What to load and where: tasks, devices, dtypes, weight formats and the model spec.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The job a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Pooled sentence embeddings (BERT-family encoders).
    Embed,
    /// Relevance scores of (query, document) pairs (cross-encoders).
    Rerank,
    /// Next-token logits for text generation (decoders).
    Generate,
}

impl Task {
    /// The manifest spelling: `embed`, `rerank`, `generate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embed => "embed",
            Self::Rerank => "rerank",
            Self::Generate => "generate",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class of device, as named in the manifest's `devices` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// Any GPU the backend can drive (wgpu: Vulkan/Metal/DX12; CUDA where built).
    Gpu,
}

/// A concrete device: a kind and, for GPUs, an ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    /// CPU or GPU.
    pub kind: DeviceKind,
    /// Which GPU (0 for the first); always 0 for the CPU.
    pub ordinal: usize,
}

impl Device {
    /// The host CPU.
    pub const CPU: Device = Device {
        kind: DeviceKind::Cpu,
        ordinal: 0,
    };

    /// The GPU with this ordinal.
    pub fn gpu(ordinal: usize) -> Self {
        Self {
            kind: DeviceKind::Gpu,
            ordinal,
        }
    }

    /// Parses the manifest spelling: `cpu`, `gpu`, `gpu:N`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cpu" => Some(Self::CPU),
            "gpu" => Some(Self::gpu(0)),
            _ => s
                .strip_prefix("gpu:")
                .and_then(|n| n.parse().ok())
                .map(Self::gpu),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::Gpu => write!(f, "gpu:{}", self.ordinal),
        }
    }
}

/// The floating-point type a backend computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DType {
    /// The manifest spelling: `f32`, `f16`, `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

/// How the weights are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// A Hugging Face model directory with `config.json` and `*.safetensors`.
    Safetensors,
    /// A single GGUF file (llama.cpp), possibly quantized.
    Gguf,
}

impl WeightFormat {
    /// The manifest spelling: `safetensors`, `gguf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
        }
    }
}

/// Everything a backend needs to load one model. Built by the runtime from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The manifest id, for messages.
    pub id: String,
    /// The job the model is loaded for.
    pub task: Task,
    /// A model directory (safetensors) or a file (GGUF).
    pub path: PathBuf,
    /// The weights' format.
    pub format: WeightFormat,
    /// The architecture: `model_type` of `config.json` (`bert`, `qwen2`, …) or
    /// `general.architecture` of a GGUF file (`qwen2`, `llama`).
    pub architecture: String,
    /// The requested compute dtype; `None` lets the backend choose (f32 on CPU).
    pub dtype: Option<DType>,
    /// Backend-specific options from the manifest's `options` table, as strings.
    pub options: BTreeMap<String, String>,
}

impl ModelSpec {
    /// An unsupported-error when the manifest sets option `key`, which `backend`
    /// does not offer; `instead` says what to do instead. For options a user could
    /// expect of every backend (`quantize`): one that cannot honour it refuses to
    /// load rather than run without it.
    pub fn refuse_option(
        &self,
        backend: &str,
        key: &str,
        instead: &str,
    ) -> Result<(), crate::BackendError> {
        match self.options.get(key) {
            None => Ok(()),
            Some(v) => Err(crate::BackendError::unsupported(format!(
                "{backend} has no option `{key}` (set to `{v}` for model `{}`): {instead}",
                self.id
            ))),
        }
    }
}
