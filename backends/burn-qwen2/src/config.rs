//! `config.json` of a Qwen2 checkpoint, read strictly: every value the decoder's
//! shape or arithmetic depends on is checked before any weight is read.

use std::path::Path;

use burn_support::config::{invalid as bad, read, required, unsupported};
use gllm_api::BackendError;
use serde::Deserialize;

/// The hyper-parameters of a Qwen2 decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rows of the embedding table and length of the logits.
    pub vocab_size: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary position embedding.
    pub rope_theta: f64,
    /// The most positions one sequence may hold.
    pub max_position_embeddings: usize,
    /// The output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
}

impl Qwen2Config {
    /// Reads and checks `config.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        let (path, text) = read(dir)?;
        Self::parse(&text, &path)
    }

    /// Parses and checks the text of a `config.json` (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, BackendError> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| bad(path, format_args!("not valid: {e}")))?;
        if let Some(t) = &raw.model_type
            && t != "qwen2"
        {
            return Err(unsupported(
                path,
                format_args!("model_type `{t}` is not qwen2"),
            ));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(unsupported(
                path,
                format_args!("hidden_act `{act}` is not supported (silu)"),
            ));
        }
        if let Some(s) = &raw.rope_scaling
            && !s.is_null()
        {
            return Err(unsupported(
                path,
                format_args!("rope_scaling {s} is not supported"),
            ));
        }
        if raw.use_sliding_window == Some(true) {
            return Err(unsupported(path, "use_sliding_window is not supported"));
        }
        let hidden_size = required(path, "hidden_size", raw.hidden_size)?;
        let heads = required(path, "num_attention_heads", raw.num_attention_heads)?;
        let kv_heads = required(
            path,
            "num_key_value_heads",
            Some(raw.num_key_value_heads.unwrap_or(heads)),
        )?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(bad(
                path,
                format_args!(
                    "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => required(path, "head_dim", Some(d))?,
            None => {
                if !hidden_size.is_multiple_of(heads) {
                    return Err(bad(
                        path,
                        format_args!(
                            "hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}"
                        ),
                    ));
                }
                hidden_size / heads
            }
        };
        if !head_dim.is_multiple_of(2) {
            return Err(bad(
                path,
                format_args!("head_dim {head_dim} is odd (RoPE needs pairs)"),
            ));
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(bad(path, "`rms_norm_eps` must be positive"));
        }
        let rope_theta = raw.rope_theta.unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 1.0) {
            return Err(bad(path, "`rope_theta` must be larger than 1"));
        }
        Ok(Self {
            hidden_size,
            intermediate_size: required(path, "intermediate_size", raw.intermediate_size)?,
            num_hidden_layers: required(path, "num_hidden_layers", raw.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: required(path, "vocab_size", raw.vocab_size)?,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: required(
                path,
                "max_position_embeddings",
                Some(raw.max_position_embeddings.unwrap_or(32768)),
            )?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        })
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}
