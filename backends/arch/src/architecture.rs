//! The decoder architectures and the traits that set them apart.

use std::fmt;

/// How rotary position embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` rotates with `i + head_dim / 2` (the Hugging Face layout; GGUF
    /// `qwen2` and `qwen3`, llama.cpp's NEOX).
    Halved,
    /// Dimension `2i` rotates with `2i + 1` (GGUF `llama`, whose q/k rows
    /// `convert_hf_to_gguf.py` permuted for this layout).
    Interleaved,
}

/// A decoder architecture gllm can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5: qkv biases, head width hidden / heads.
    Qwen2,
    /// Qwen3 (dense): no qkv bias, RMSNorm per head on q and k before RoPE, an
    /// explicit head width.
    Qwen3,
    /// Llama (and SmolLM2): no bias by default.
    Llama,
}

impl Architecture {
    /// Every architecture, in the order messages list them.
    pub const ALL: [Architecture; 3] = [Self::Qwen2, Self::Qwen3, Self::Llama];

    /// The architecture of a `model_type` (`config.json`) or a GGUF
    /// `general.architecture`; the two use the same strings.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// `model_type` and GGUF architecture string.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Llama => "llama",
        }
    }

    /// The names of every architecture, for messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// Whether q, k and v carry biases when `config.json` does not say. Qwen2's
    /// attention always has them (transformers ignores `attention_bias` there).
    pub fn attention_bias(self, configured: Option<bool>) -> bool {
        match self {
            Self::Qwen2 => true,
            Self::Qwen3 | Self::Llama => configured.unwrap_or(false),
        }
    }

    /// RMSNorm per head on q and k before RoPE (`q_norm`, `k_norm`).
    pub fn qk_norm(self) -> bool {
        self == Self::Qwen3
    }

    /// How a GGUF file of this architecture pairs RoPE dimensions (safetensors
    /// checkpoints are always [`RopeStyle::Halved`]).
    pub fn gguf_rope_style(self) -> RopeStyle {
        match self {
            Self::Qwen2 | Self::Qwen3 => RopeStyle::Halved,
            Self::Llama => RopeStyle::Interleaved,
        }
    }

    /// `max_position_embeddings` when `config.json` does not say (transformers' defaults).
    pub fn default_max_positions(self) -> usize {
        match self {
            Self::Qwen2 | Self::Qwen3 => 32_768,
            Self::Llama => 2048,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
