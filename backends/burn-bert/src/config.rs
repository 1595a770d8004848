//! `config.json` of a BERT-family checkpoint (BERT, RoBERTa, XLM-RoBERTa,
//! CamemBERT), read strictly: every value the architecture depends on is
//! checked before any weight is read.

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

/// Which member of the BERT family: they share the encoder and differ in
/// positions, segments and the classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `bert`: positions from 0, token types (segments), the pooler
    /// (dense + tanh on `[CLS]`) under the classifier.
    Bert,
    /// `roberta`, `xlm-roberta`, `camembert`: positions from `pad_token_id + 1`,
    /// no segments (every token type 0), and RoBERTa's classification head
    /// (`classifier.dense` + tanh + `classifier.out_proj` on `<s>`, no pooler).
    Roberta,
}

impl Family {
    /// The family of a `model_type`, if it is one.
    pub fn of(model_type: &str) -> Option<Self> {
        match model_type.to_ascii_lowercase().as_str() {
            "bert" => Some(Self::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Self::Roberta),
            _ => None,
        }
    }

    /// The `model_type` values the backend reads.
    pub const MODEL_TYPES: [&'static str; 4] = ["bert", "roberta", "xlm-roberta", "camembert"];

    /// The prefix of the encoder's tensors in a task checkpoint
    /// (`BertForSequenceClassification`, `RobertaForSequenceClassification`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert.",
            Self::Roberta => "roberta.",
        }
    }
}

/// The hyper-parameters of a BERT-family encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// BERT or RoBERTa (from `model_type`; BERT when it is absent).
    pub family: Family,
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
        let family = match &raw.model_type {
            None => Family::Bert,
            Some(t) => Family::of(t).ok_or_else(|| {
                unsupported(
                    path,
                    format_args!(
                        "model_type `{t}` is not one of {}",
                        Family::MODEL_TYPES.join(", ")
                    ),
                )
            })?,
        };
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
        bounded(
            path,
            &[
                ("hidden_size", hidden_size),
                ("num_attention_heads", num_attention_heads),
                ("intermediate_size", intermediate_size),
                ("vocab_size", vocab_size),
                ("max_position_embeddings", max_position_embeddings),
                ("type_vocab_size", type_vocab_size),
            ],
            num_hidden_layers,
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
        let pad_token_id = raw.pad_token_id.unwrap_or(match family {
            Family::Bert => 0,
            Family::Roberta => 1,
        });
        if family == Family::Roberta && pad_token_id as usize + 1 >= max_position_embeddings {
            return Err(bad(
                path,
                format_args!(
                    "max_position_embeddings {max_position_embeddings} leaves no position after \
                     pad_token_id {pad_token_id} (RoBERTa positions start at pad_token_id + 1)"
                ),
            ));
        }
        let num_labels = match (&raw.id2label, raw.num_labels) {
            (Some(map), _) if !map.is_empty() => Some(map.len()),
            (_, Some(n)) => Some(n),
            _ => None,
        };
        Ok(Self {
            family,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act,
            layer_norm_eps,
            max_position_embeddings,
            type_vocab_size,
            vocab_size,
            pad_token_id,
            num_labels,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The position id of a sequence's first token: 0 for BERT, `pad_token_id + 1`
    /// for RoBERTa (whose padding tokens take position `pad_token_id`).
    pub fn first_position(&self) -> usize {
        match self.family {
            Family::Bert => 0,
            Family::Roberta => self.pad_token_id as usize + 1,
        }
    }

    /// The longest input: the position rows left after [`Self::first_position`]
    /// (512 of RoBERTa's 514).
    pub fn max_input_len(&self) -> usize {
        self.max_position_embeddings - self.first_position()
    }
}

/// The most encoder layers a config may name (the largest BERT-family models have 48).
pub const MAX_LAYERS: usize = 4096;

/// The largest a single dimension may be.
pub const MAX_DIM: usize = 1 << 24;

/// Dimensions no real encoder reaches are an error before anything is allocated
/// for them, and every weight matrix's element count fits in memory arithmetic.
fn bounded(path: &Path, dims: &[(&str, usize)], layers: usize) -> Result<(), BackendError> {
    if let Some((name, v)) = dims.iter().find(|(_, v)| *v > MAX_DIM) {
        return Err(bad(path, format_args!("`{name}` = {v} exceeds {MAX_DIM}")));
    }
    if layers > MAX_LAYERS {
        return Err(bad(
            path,
            format_args!("`num_hidden_layers` = {layers} exceeds {MAX_LAYERS}"),
        ));
    }
    let hidden = dims[0].1;
    let qkv = [("hidden_size", 3 * hidden)];
    let too_big = dims[2..].iter().chain(&qkv).find(|(_, v)| {
        v.checked_mul(hidden)
            .is_none_or(|n| n > isize::MAX as usize / 4)
    });
    if let Some((name, v)) = too_big {
        return Err(bad(
            path,
            format_args!("a [{v}, {hidden}] weight (`{name}` × `hidden_size`) is too large"),
        ));
    }
    Ok(())
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
    fn absurd_dimensions_are_refused_before_allocation() {
        let e = parse(
            r#"{"hidden_size": 8, "num_hidden_layers": 1000000000, "num_attention_heads": 2,
                "intermediate_size": 16, "vocab_size": 10}"#,
        )
        .expect_err("invalid");
        assert!(
            e.message
                .contains("`num_hidden_layers` = 1000000000 exceeds 4096"),
            "{e}"
        );
        let e = parse(
            r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "vocab_size": 100000000}"#,
        )
        .expect_err("invalid");
        assert!(
            e.message.contains("`vocab_size` = 100000000 exceeds"),
            "{e}"
        );
    }

    #[test]
    fn roberta_positions_start_after_the_padding_id() {
        let c = parse(
            r#"{"model_type": "xlm-roberta", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10,
                "max_position_embeddings": 514, "pad_token_id": 1, "type_vocab_size": 1}"#,
        )
        .expect("valid");
        assert_eq!(c.family, Family::Roberta);
        assert_eq!(c.first_position(), 2);
        assert_eq!(c.max_input_len(), 512);
        let bert = parse(
            r#"{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}"#,
        )
        .expect("valid");
        assert_eq!((bert.first_position(), bert.max_input_len()), (0, 512));
    }

    #[test]
    fn roberta_without_room_for_positions_is_invalid() {
        let e = parse(
            r#"{"model_type": "roberta", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10,
                "max_position_embeddings": 2, "pad_token_id": 1}"#,
        )
        .expect_err("invalid");
        assert!(e.message.contains("pad_token_id 1"), "{e}");
    }

    #[test]
    fn other_model_types_are_unsupported_and_the_known_ones_listed() {
        let e = parse(
            r#"{"model_type": "deberta-v2", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}"#,
        )
        .expect_err("unsupported");
        assert_eq!(e.kind, gllm_api::ErrorKind::Unsupported);
        assert!(
            e.message.contains("bert, roberta, xlm-roberta, camembert"),
            "{e}"
        );
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
