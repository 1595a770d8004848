//! `config.json` of a BERT checkpoint, read strictly: every value the
//! architecture depends on is checked before any weight is read.

use std::path::Path;

use burn_support::config::{invalid as bad, read, required, unsupported};
use gllm_api::BackendError;
use serde::Deserialize;

/// The activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form, as `torch.nn.functional.gelu`.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

/// The hyper-parameters of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads (divides `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Activation of the feed-forward block.
    pub hidden_act: Activation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Rows of the position embedding table: the longest input.
    pub max_position_embeddings: usize,
    /// Rows of the token type (segment) embedding table.
    pub type_vocab_size: usize,
    /// Rows of the word embedding table.
    pub vocab_size: usize,
    /// The padding token id.
    pub pad_token_id: u32,
    /// Labels of a sequence classifier (`id2label` / `num_labels`), when the config names them.
    pub num_labels: Option<usize>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    vocab_size: Option<usize>,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    num_labels: Option<usize>,
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
}

impl BertConfig {
    /// Reads and checks `config.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        let (path, text) = read(dir)?;
        Self::parse(&path, &text)
    }

    /// Parses `config.json` text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BackendError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| bad(path, format_args!("not valid JSON: {e}")))?;
        if let Some(t) = &raw.model_type
            && !t.eq_ignore_ascii_case("bert")
        {
            return Err(unsupported(
                path,
                format_args!("model_type `{t}` is not bert"),
            ));
        }
        let hidden_size = required(path, "hidden_size", raw.hidden_size)?;
        let num_hidden_layers = required(path, "num_hidden_layers", raw.num_hidden_layers)?;
        let num_attention_heads = required(path, "num_attention_heads", raw.num_attention_heads)?;
        let intermediate_size = required(path, "intermediate_size", raw.intermediate_size)?;
        let vocab_size = required(path, "vocab_size", raw.vocab_size)?;
        let max_position_embeddings = required(
            path,
            "max_position_embeddings",
            Some(raw.max_position_embeddings.unwrap_or(512)),
        )?;
        let type_vocab_size = required(
            path,
            "type_vocab_size",
            Some(raw.type_vocab_size.unwrap_or(2)),
        )?;
        if !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(bad(
                path,
                format_args!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        let hidden_act = match raw.hidden_act.as_deref().unwrap_or("gelu") {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(unsupported(
                    path,
                    format_args!(
                        "hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                    ),
                ));
            }
        };
        if let Some(p) = &raw.position_embedding_type
            && p != "absolute"
        {
            return Err(unsupported(
                path,
                format_args!("position_embedding_type `{p}` is not supported (absolute)"),
            ));
        }
        let layer_norm_eps = raw.layer_norm_eps.unwrap_or(1e-12);
        if !(layer_norm_eps.is_finite() && layer_norm_eps >= 0.0) {
            return Err(bad(
                path,
                format_args!("layer_norm_eps {layer_norm_eps} is invalid"),
            ));
        }
        let num_labels = match (&raw.id2label, raw.num_labels) {
            (Some(map), _) if !map.is_empty() => Some(map.len()),
            (_, Some(n)) => Some(n),
            _ => None,
        };
        Ok(Self {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act,
            layer_norm_eps,
            max_position_embeddings,
            type_vocab_size,
            vocab_size,
            pad_token_id: raw.pad_token_id.unwrap_or(0),
            num_labels,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BertConfig, BackendError> {
        BertConfig::parse(Path::new("config.json"), text)
    }

    #[test]
    fn reads_a_minimal_config_with_defaults() {
        let c = parse(
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "vocab_size": 10}"#,
        )
        .expect("valid");
        assert_eq!(c.head_dim(), 4);
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.num_labels, None);
    }

    #[test]
    fn rejects_heads_that_do_not_divide_hidden() {
        let e = parse(
            r#"{"hidden_size": 10, "num_hidden_layers": 1, "num_attention_heads": 4,
                "intermediate_size": 16, "vocab_size": 10}"#,
        )
        .expect_err("invalid");
        assert_eq!(e.kind, gllm_api::ErrorKind::InvalidModel);
        assert!(e.message.contains("num_attention_heads"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let e = parse(r#"{"hidden_size": 8}"#).expect_err("invalid");
        assert!(e.message.contains("num_hidden_layers"), "{e}");
    }

    #[test]
    fn unknown_activation_is_unsupported() {
        let e = parse(
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "vocab_size": 10, "hidden_act": "swish"}"#,
        )
        .expect_err("unsupported");
        assert_eq!(e.kind, gllm_api::ErrorKind::Unsupported);
    }
}
