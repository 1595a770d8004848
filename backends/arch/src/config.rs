//! The decoder's hyper-parameters and the one set of rules they must satisfy.

use gllm_api::BackendError;

use crate::{Architecture, RopeStyle};

/// Everything a decoder's shape and arithmetic depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Which decoder this is.
    pub architecture: Architecture,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of one head (Qwen3 gives it; otherwise hidden / heads).
    pub head_dim: usize,
    /// Rows of the embedding (and of the logits).
    pub vocab_size: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// The most positions one sequence may hold.
    pub max_position_embeddings: usize,
    /// The output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases.
    pub attention_bias: bool,
    /// RMSNorm per head on q and k before RoPE.
    pub qk_norm: bool,
    /// How RoPE pairs dimensions.
    pub rope_style: RopeStyle,
}

/// The most decoder layers a config may declare (real models have under 200):
/// a bound on what is allocated per layer before the tensors are checked.
pub const MAX_LAYERS: usize = 4096;

/// The largest a single dimension (width, vocabulary, heads × head width) may be.
pub const MAX_DIM: usize = 1 << 24;

impl DecoderConfig {
    /// Checks that the numbers describe a buildable decoder: no zero or absurd
    /// dimension, heads that group, an even head width, positive RMSNorm epsilon and
    /// RoPE base, and every matrix's size representable.
    pub fn validate(&self) -> Result<(), BackendError> {
        let bad = |m: String| Err(BackendError::invalid_model(m));
        let dims = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in dims {
            if value == 0 {
                return bad(format!("`{name}` is 0"));
            }
            if value > MAX_DIM {
                return bad(format!("`{name}` = {value} exceeds {MAX_DIM}"));
            }
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return bad(format!(
                "`num_hidden_layers` = {} exceeds {MAX_LAYERS}",
                self.num_hidden_layers
            ));
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
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms_norm_eps {} is not positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} is not positive", self.rope_theta));
        }
        let q = self.num_attention_heads.checked_mul(self.head_dim);
        let sizes = [
            q.and_then(|q| q.checked_mul(self.hidden_size)),
            self.vocab_size.checked_mul(self.hidden_size),
            self.intermediate_size.checked_mul(self.hidden_size),
        ];
        if q.is_none_or(|q| q > MAX_DIM)
            || sizes
                .iter()
                .any(|s| s.is_none_or(|s| s > isize::MAX as usize / 4))
        {
            return bad(format!(
                "the matrices of this config are too large: {self:?}"
            ));
        }
        Ok(())
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
