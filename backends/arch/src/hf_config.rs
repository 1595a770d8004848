//! A decoder's config from a Hugging Face `config.json`.

use std::path::Path;

use gllm_api::BackendError;
use serde::Deserialize;

use crate::{Architecture, DecoderConfig, RopeStyle};

/// `config.json` as transformers writes it (only the keys the decoder depends on).
#[derive(Debug, Deserialize)]
struct HfConfig {
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
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    use_sliding_window: bool,
    sliding_window: Option<usize>,
}

fn required(key: &str, value: Option<usize>) -> Result<usize, BackendError> {
    value.ok_or_else(|| BackendError::invalid_model(format!("missing `{key}`")))
}

impl DecoderConfig {
    /// Reads and checks the `config.json` at `path`; errors name the file.
    pub fn from_hf_file(path: &Path) -> Result<Self, BackendError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BackendError::invalid_model(format!("{}: cannot read: {e}", path.display()))
        })?;
        Self::from_hf_json(&text).map_err(|e| BackendError {
            message: format!("{}: {}", path.display(), e.message),
            ..e
        })
    }

    /// Parses and checks the text of a `config.json` (`model_type` qwen2, qwen3 or
    /// llama; qwen2 when absent). Transformers' defaults fill the optional keys:
    /// `rms_norm_eps` 1e-6, `rope_theta` 10000, untied embeddings. Refused, as
    /// unsupported: another `model_type`, an activation other than silu, MLP
    /// biases, RoPE scaling other than `default`. A sliding window caps the context
    /// at the window (positions within it attend exactly as without one).
    pub fn from_hf_json(text: &str) -> Result<Self, BackendError> {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| BackendError::invalid_model(format!("not a valid config.json: {e}")))?;
        let model_type = hf.model_type.as_deref().unwrap_or("qwen2");
        let architecture = Architecture::from_name(model_type).ok_or_else(|| {
            BackendError::unsupported(format!(
                "model_type `{model_type}` is not a decoder gllm builds ({})",
                Architecture::names()
            ))
        })?;
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
        if let Some(scaling) = hf.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str());
            if kind != Some("default") {
                return Err(BackendError::unsupported(format!(
                    "rope_scaling {scaling} is not supported"
                )));
            }
        }
        let hidden_size = required("hidden_size", hf.hidden_size)?;
        let heads = required("num_attention_heads", hf.num_attention_heads)?;
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None if heads > 0 && hidden_size.is_multiple_of(heads) => hidden_size / heads,
            None => {
                return Err(BackendError::invalid_model(format!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}"
                )));
            }
        };
        let mut max_positions = hf
            .max_position_embeddings
            .unwrap_or(architecture.default_max_positions());
        if hf.use_sliding_window
            && let Some(w) = hf.sliding_window
        {
            max_positions = max_positions.min(w);
        }
        let cfg = Self {
            architecture,
            hidden_size,
            intermediate_size: required("intermediate_size", hf.intermediate_size)?,
            num_hidden_layers: required("num_hidden_layers", hf.num_hidden_layers)?,
            num_attention_heads: heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: required("vocab_size", hf.vocab_size)?,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: max_positions,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            attention_bias: architecture.attention_bias(hf.attention_bias),
            qk_norm: architecture.qk_norm(),
            rope_style: RopeStyle::Halved,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gllm_api::ErrorKind;

    const QWEN2: &str = r#"{"model_type":"qwen2","hidden_size":32,"intermediate_size":64,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,
        "rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true,"rope_scaling":null}"#;

    fn with(base: &str, key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(base: &str, key: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    }

    #[test]
    fn reads_qwen2_with_its_biases_and_derived_head_width() {
        let cfg = DecoderConfig::from_hf_json(QWEN2).unwrap();
        assert_eq!(cfg.architecture, Architecture::Qwen2);
        assert_eq!(
            (cfg.head_dim, cfg.group(), cfg.q_dim(), cfg.kv_dim()),
            (8, 2, 32, 16)
        );
        assert!(cfg.attention_bias && !cfg.qk_norm && cfg.tie_word_embeddings);
        let cfg = DecoderConfig::from_hf_json(&with(QWEN2, "attention_bias", "false")).unwrap();
        assert!(
            cfg.attention_bias,
            "transformers' Qwen2 always has qkv biases"
        );
    }

    #[test]
    fn reads_qwen3_with_explicit_head_width_and_qk_norm() {
        let text = with(&with(QWEN2, "model_type", "\"qwen3\""), "head_dim", "16");
        let cfg = DecoderConfig::from_hf_json(&text).unwrap();
        assert_eq!(cfg.architecture, Architecture::Qwen3);
        assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.kv_dim()), (16, 64, 32));
        assert!(!cfg.attention_bias && cfg.qk_norm);
    }

    #[test]
    fn fills_transformers_defaults() {
        let text = without(
            &without(&without(QWEN2, "rms_norm_eps"), "rope_theta"),
            "model_type",
        );
        let cfg = DecoderConfig::from_hf_json(&without(&text, "tie_word_embeddings")).unwrap();
        assert_eq!((cfg.rms_norm_eps, cfg.rope_theta), (1e-6, 10_000.0));
        assert_eq!(cfg.max_position_embeddings, 32_768);
        assert!(!cfg.tie_word_embeddings);
        let text = with(QWEN2, "rope_scaling", r#"{"rope_type":"default"}"#);
        assert!(DecoderConfig::from_hf_json(&text).is_ok());
        let text = with(
            &with(QWEN2, "use_sliding_window", "true"),
            "sliding_window",
            "128",
        );
        assert_eq!(
            DecoderConfig::from_hf_json(&text)
                .unwrap()
                .max_position_embeddings,
            128
        );
    }

    #[test]
    fn refuses_what_it_cannot_compute_naming_the_key() {
        let cases = [
            (
                with(QWEN2, "model_type", "\"bert\""),
                ErrorKind::Unsupported,
                "model_type `bert`",
            ),
            (
                with(QWEN2, "hidden_act", "\"gelu\""),
                ErrorKind::Unsupported,
                "hidden_act",
            ),
            (
                with(QWEN2, "mlp_bias", "true"),
                ErrorKind::Unsupported,
                "mlp_bias",
            ),
            (
                with(QWEN2, "rope_scaling", r#"{"rope_type":"yarn","factor":4}"#),
                ErrorKind::Unsupported,
                "rope_scaling",
            ),
            (
                without(QWEN2, "vocab_size"),
                ErrorKind::InvalidModel,
                "missing `vocab_size`",
            ),
            (
                with(QWEN2, "num_key_value_heads", "3"),
                ErrorKind::InvalidModel,
                "num_key_value_heads 3",
            ),
            (
                with(QWEN2, "num_attention_heads", "5"),
                ErrorKind::InvalidModel,
                "not a multiple",
            ),
            (with(QWEN2, "head_dim", "7"), ErrorKind::InvalidModel, "odd"),
            (
                with(QWEN2, "rms_norm_eps", "0"),
                ErrorKind::InvalidModel,
                "rms_norm_eps",
            ),
            (
                with(QWEN2, "rope_theta", "-1"),
                ErrorKind::InvalidModel,
                "rope_theta",
            ),
            (
                with(QWEN2, "num_hidden_layers", "0"),
                ErrorKind::InvalidModel,
                "`num_hidden_layers` is 0",
            ),
            (
                with(QWEN2, "num_hidden_layers", "1000000000"),
                ErrorKind::InvalidModel,
                "`num_hidden_layers` = 1000000000",
            ),
            (
                "[1]".to_string(),
                ErrorKind::InvalidModel,
                "not a valid config.json",
            ),
        ];
        for (text, kind, words) in cases {
            let e = DecoderConfig::from_hf_json(&text).expect_err(words);
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(words), "{e} should say {words}");
        }
    }
}
