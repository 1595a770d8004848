//! The decoder's hyper-parameters, read from a Hugging Face `config.json` or from GGUF metadata.

use std::path::Path;

use gllm_api::BackendError;
use serde::Deserialize;

/// How rotary position embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` rotates with `i + head_dim / 2` (Hugging Face layout, GGUF `qwen2`).
    Halved,
    /// Dimension `2i` rotates with `2i + 1` (GGUF `llama`, whose q/k rows were permuted
    /// by `convert_hf_to_gguf.py` for this layout).
    Interleaved,
}

/// Everything the decoder's shape and arithmetic depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    /// `qwen2` or `llama`.
    pub architecture: String,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of the embedding (and of the logits).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// The output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (Qwen2 yes, Llama no).
    pub attention_bias: bool,
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
}

/// `config.json` as transformers writes it (only the fields the decoder needs).
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    use_sliding_window: bool,
    sliding_window: Option<usize>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    32_768
}

impl Qwen2Config {
    /// Reads and checks a `config.json` (`model_type` `qwen2` or `llama`).
    pub fn from_hf_file(path: &Path) -> Result<Self, BackendError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BackendError::invalid_model(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_hf_json(&text)
            .map_err(|e| BackendError::invalid_model(format!("{}: {}", path.display(), e.message)))
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self, BackendError> {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| BackendError::invalid_model(format!("bad config.json: {e}")))?;
        let architecture = hf.model_type.clone().unwrap_or_else(|| "qwen2".into());
        let attention_bias = match architecture.as_str() {
            "qwen2" => hf.attention_bias.unwrap_or(true),
            "llama" => hf.attention_bias.unwrap_or(false),
            other => {
                return Err(BackendError::unsupported(format!(
                    "model_type `{other}` is not a Qwen2 or Llama decoder"
                )));
            }
        };
        if hf.mlp_bias {
            return Err(BackendError::unsupported(
                "mlp_bias = true is not supported",
            ));
        }
        if let Some(act) = &hf.hidden_act
            && act != "silu"
        {
            return Err(BackendError::unsupported(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
        if let Some(scaling) = &hf.rope_scaling {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str());
            if !scaling.is_null() && kind != Some("default") {
                return Err(BackendError::unsupported(format!(
                    "rope_scaling {scaling} is not supported"
                )));
            }
        }
        let heads = hf.num_attention_heads;
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None if heads > 0 => hf.hidden_size / heads,
            None => 0,
        };
        let mut max_positions = hf.max_position_embeddings;
        if hf.use_sliding_window
            && let Some(w) = hf.sliding_window
        {
            // Positions beyond the window would need a sliding mask; refuse them instead.
            max_positions = max_positions.min(w);
        }
        let cfg = Self {
            architecture,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: max_positions,
            tie_word_embeddings: hf.tie_word_embeddings,
            attention_bias,
            rope_style: RopeStyle::Halved,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the numbers describe a buildable decoder.
    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |m: String| Err(BackendError::invalid_model(m));
        if self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || self.vocab_size == 0
            || self.head_dim == 0
        {
            return bad(format!("config has a zero dimension: {self:?}"));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} is odd (RoPE needs pairs)",
                self.head_dim
            ));
        }
        if self.rope_theta <= 0.0 || !self.rope_theta.is_finite() {
            return bad(format!("rope_theta {} is not positive", self.rope_theta));
        }
        if self.max_position_embeddings == 0 {
            return bad("max_position_embeddings is 0".into());
        }
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qwen2_config() -> Result<(), BackendError> {
        let cfg = Qwen2Config::from_hf_json(
            r#"{"model_type":"qwen2","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"rms_norm_eps":1e-6,
            "rope_theta":1000000.0,"tie_word_embeddings":true,"rope_scaling":null}"#,
        )?;
        assert_eq!(cfg.head_dim, 8);
        assert_eq!(cfg.group_size(), 2);
        assert!(cfg.attention_bias);
        Ok(())
    }

    #[test]
    fn refuses_bad_head_counts() {
        let err = Qwen2Config::from_hf_json(
            r#"{"model_type":"qwen2","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":3,"vocab_size":100,"rms_norm_eps":1e-6}"#,
        )
        .err();
        assert!(err.is_some_and(|e| e.message.contains("num_key_value_heads")));
    }
}
