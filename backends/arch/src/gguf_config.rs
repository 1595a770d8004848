//! A decoder's config from GGUF metadata (llama.cpp's keys).

use gllm_api::BackendError;

use crate::schema::gguf_name;
use crate::{Architecture, DecoderConfig, LayerPart, Part};

/// Read access to a GGUF file's header, implemented by the engine that parsed it.
pub trait GgufMetadata {
    /// An integer value of any width (`None` if absent, negative or not an integer).
    fn uint(&self, key: &str) -> Option<u64>;
    /// A floating-point value.
    fn float(&self, key: &str) -> Option<f64>;
    /// A string value.
    fn string(&self, key: &str) -> Option<&str>;
    /// A tensor's dimensions in PyTorch order (`[rows, columns]`), if it exists.
    fn tensor_dims(&self, name: &str) -> Option<Vec<usize>>;
}

impl DecoderConfig {
    /// Reads and checks the config of a GGUF file from its metadata
    /// (`general.architecture` qwen2, qwen3 or llama) and the embedding's shape.
    /// The embeddings are tied when the file has no `output.weight`. Refused, as
    /// unsupported: partial rotary embeddings, RoPE scaling, keys and values of
    /// different widths.
    pub fn from_gguf(meta: &dyn GgufMetadata) -> Result<Self, BackendError> {
        let name = meta
            .string("general.architecture")
            .ok_or_else(|| BackendError::invalid_model("GGUF has no `general.architecture`"))?;
        let architecture = Architecture::from_name(name).ok_or_else(|| {
            BackendError::unsupported(format!(
                "GGUF architecture `{name}` is not supported ({})",
                Architecture::names()
            ))
        })?;
        let key = |k: &str| format!("{name}.{k}");
        let uint = |k: &str| meta.uint(&key(k)).and_then(|v| usize::try_from(v).ok());
        let req = |k: &str| {
            uint(k).ok_or_else(|| {
                BackendError::invalid_model(format!("GGUF metadata lacks `{}`", key(k)))
            })
        };
        let hidden = req("embedding_length")?;
        let heads = req("attention.head_count")?;
        let head_dim = match uint("attention.key_length") {
            Some(d) => d,
            None => hidden.checked_div(heads).unwrap_or(0),
        };
        if let Some(v) = uint("attention.value_length")
            && v != head_dim
        {
            return Err(BackendError::unsupported(format!(
                "keys of width {head_dim} with values of width {v} are not supported"
            )));
        }
        if let Some(rot) = uint("rope.dimension_count")
            && rot != head_dim
        {
            return Err(BackendError::unsupported(format!(
                "partial rotary embeddings ({rot} of {head_dim} dimensions) are not supported"
            )));
        }
        if let Some(s) = meta.string(&key("rope.scaling.type"))
            && s != "none"
        {
            return Err(BackendError::unsupported(format!(
                "rope scaling `{s}` is not supported"
            )));
        }
        let embed = gguf_name(Part::Embed);
        let vocab = meta
            .tensor_dims(&embed)
            .and_then(|d| d.first().copied())
            .ok_or_else(|| BackendError::invalid_model(format!("missing tensor `{embed}`")))?;
        let eps = meta
            .float(&key("attention.layer_norm_rms_epsilon"))
            .ok_or_else(|| {
                BackendError::invalid_model(format!(
                    "GGUF metadata lacks `{}`",
                    key("attention.layer_norm_rms_epsilon")
                ))
            })?;
        let has_bias = meta
            .tensor_dims(&gguf_name(Part::Layer(0, LayerPart::QB)))
            .is_some();
        let cfg = Self {
            architecture,
            hidden_size: hidden,
            intermediate_size: req("feed_forward_length")?,
            num_hidden_layers: req("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: uint("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            vocab_size: vocab,
            rms_norm_eps: eps,
            rope_theta: meta.float(&key("rope.freq_base")).unwrap_or(10_000.0),
            max_position_embeddings: uint("context_length").unwrap_or(4096),
            tie_word_embeddings: meta.tensor_dims(&gguf_name(Part::LmHead)).is_none(),
            attention_bias: architecture.attention_bias(Some(has_bias)),
            qk_norm: architecture.qk_norm(),
            rope_style: architecture.gguf_rope_style(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RopeStyle;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Meta {
        ints: BTreeMap<String, u64>,
        floats: BTreeMap<String, f64>,
        strings: BTreeMap<String, String>,
        tensors: BTreeMap<String, Vec<usize>>,
    }

    impl GgufMetadata for Meta {
        fn uint(&self, key: &str) -> Option<u64> {
            self.ints.get(key).copied()
        }
        fn float(&self, key: &str) -> Option<f64> {
            self.floats.get(key).copied()
        }
        fn string(&self, key: &str) -> Option<&str> {
            self.strings.get(key).map(String::as_str)
        }
        fn tensor_dims(&self, name: &str) -> Option<Vec<usize>> {
            self.tensors.get(name).cloned()
        }
    }

    fn qwen3() -> Meta {
        let mut m = Meta::default();
        m.strings
            .insert("general.architecture".into(), "qwen3".into());
        for (k, v) in [
            ("embedding_length", 32),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("attention.key_length", 16),
            ("attention.value_length", 16),
            ("feed_forward_length", 64),
            ("block_count", 2),
            ("context_length", 40960),
        ] {
            m.ints.insert(format!("qwen3.{k}"), v);
        }
        m.floats
            .insert("qwen3.attention.layer_norm_rms_epsilon".into(), 1e-6);
        m.floats.insert("qwen3.rope.freq_base".into(), 1e6);
        m.tensors
            .insert("token_embd.weight".into(), vec![151936, 32]);
        m
    }

    #[test]
    fn reads_qwen3_metadata() {
        let cfg = DecoderConfig::from_gguf(&qwen3()).unwrap();
        assert_eq!(cfg.architecture, Architecture::Qwen3);
        assert_eq!(
            (cfg.head_dim, cfg.vocab_size, cfg.num_key_value_heads),
            (16, 151936, 2)
        );
        assert!(cfg.qk_norm && !cfg.attention_bias && cfg.tie_word_embeddings);
        assert_eq!((cfg.rope_style, cfg.rope_theta), (RopeStyle::Halved, 1e6));
    }

    #[test]
    fn refuses_unknown_architectures_and_missing_keys_by_name() {
        let mut m = qwen3();
        m.strings
            .insert("general.architecture".into(), "gemma".into());
        let e = DecoderConfig::from_gguf(&m).unwrap_err();
        assert!(e.message.contains("`gemma`"), "{e}");
        let mut m = qwen3();
        m.ints.remove("qwen3.block_count");
        let e = DecoderConfig::from_gguf(&m).unwrap_err();
        assert!(e.message.contains("`qwen3.block_count`"), "{e}");
        let mut m = qwen3();
        m.ints.insert("qwen3.rope.dimension_count".into(), 8);
        let e = DecoderConfig::from_gguf(&m).unwrap_err();
        assert!(e.message.contains("partial rotary"), "{e}");
    }
}
