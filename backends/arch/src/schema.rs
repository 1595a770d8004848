//! The tensors a decoder config requires: their roles, shapes and names in
//! Hugging Face checkpoints and GGUF files, and the strict check of a checkpoint.

use std::collections::BTreeMap;

use gllm_api::BackendError;

use crate::DecoderConfig;

/// One tensor of the decoder, independent of the file format's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Token embeddings `[vocab, hidden]`.
    Embed,
    /// Final RMSNorm `[hidden]`.
    Norm,
    /// Separate output projection `[vocab, hidden]` (absent when tied).
    LmHead,
    /// A tensor of decoder layer `usize`.
    Layer(usize, LayerPart),
}

/// A tensor of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPart {
    /// RMSNorm before attention.
    InputNorm,
    /// q weight.
    QW,
    /// q bias.
    QB,
    /// k weight.
    KW,
    /// k bias.
    KB,
    /// v weight.
    VW,
    /// v bias.
    VB,
    /// RMSNorm over each query head (Qwen3).
    QNorm,
    /// RMSNorm over each key head (Qwen3).
    KNorm,
    /// Attention output weight.
    OW,
    /// RMSNorm before the MLP.
    PostNorm,
    /// MLP gate weight.
    Gate,
    /// MLP up weight.
    Up,
    /// MLP down weight.
    Down,
}

/// How a Hugging Face checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfNaming {
    /// A `*ForCausalLM` checkpoint: `model.layers.…`, `lm_head.weight`.
    CausalLm,
    /// A base model saved on its own (as Qwen3-Embedding ships): `layers.…`, no prefix.
    Base,
}

impl HfNaming {
    /// The naming of a checkpoint holding the tensors `shapes`: base when it has
    /// `embed_tokens.weight` and no `model.embed_tokens.weight`.
    pub fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Self {
        let base = hf_name(Part::Embed, Self::Base);
        if shapes.contains_key(&base) && !shapes.contains_key(&hf_name(Part::Embed, Self::CausalLm))
        {
            Self::Base
        } else {
            Self::CausalLm
        }
    }
}

/// The tensors `cfg` requires, with their shapes (PyTorch order: `[out, in]` for
/// matrices), layer by layer: produced lazily, so a config's layer count costs
/// nothing before the first tensor it names is found missing.
pub fn expected(cfg: &DecoderConfig) -> impl Iterator<Item = (Part, Vec<usize>)> + '_ {
    use LayerPart::*;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv, d) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let layers = (0..cfg.num_hidden_layers).flat_map(move |l| {
        let mut parts = vec![
            (InputNorm, vec![h]),
            (QW, vec![q, h]),
            (KW, vec![kv, h]),
            (VW, vec![kv, h]),
            (OW, vec![h, q]),
            (PostNorm, vec![h]),
            (Gate, vec![i, h]),
            (Up, vec![i, h]),
            (Down, vec![h, i]),
        ];
        if cfg.attention_bias {
            parts.extend([(QB, vec![q]), (KB, vec![kv]), (VB, vec![kv])]);
        }
        if cfg.qk_norm {
            parts.extend([(QNorm, vec![d]), (KNorm, vec![d])]);
        }
        parts.into_iter().map(move |(p, s)| (Part::Layer(l, p), s))
    });
    let head = (!cfg.tie_word_embeddings).then(|| (Part::LmHead, vec![cfg.vocab_size, h]));
    std::iter::once((Part::Embed, vec![cfg.vocab_size, h]))
        .chain(layers)
        .chain(std::iter::once((Part::Norm, vec![h])))
        .chain(head)
}

/// The Hugging Face name of a decoder tensor.
pub fn hf_name(part: Part, naming: HfNaming) -> String {
    use LayerPart::*;
    let prefix = match naming {
        HfNaming::CausalLm => "model.",
        HfNaming::Base => "",
    };
    match part {
        Part::Embed => format!("{prefix}embed_tokens.weight"),
        Part::Norm => format!("{prefix}norm.weight"),
        Part::LmHead => "lm_head.weight".into(),
        Part::Layer(l, p) => {
            let s = match p {
                InputNorm => "input_layernorm.weight",
                QW => "self_attn.q_proj.weight",
                QB => "self_attn.q_proj.bias",
                KW => "self_attn.k_proj.weight",
                KB => "self_attn.k_proj.bias",
                VW => "self_attn.v_proj.weight",
                VB => "self_attn.v_proj.bias",
                QNorm => "self_attn.q_norm.weight",
                KNorm => "self_attn.k_norm.weight",
                OW => "self_attn.o_proj.weight",
                PostNorm => "post_attention_layernorm.weight",
                Gate => "mlp.gate_proj.weight",
                Up => "mlp.up_proj.weight",
                Down => "mlp.down_proj.weight",
            };
            format!("{prefix}layers.{l}.{s}")
        }
    }
}

/// The GGUF name of a decoder tensor (llama.cpp's `LLM_TENSOR_NAMES`).
pub fn gguf_name(part: Part) -> String {
    use LayerPart::*;
    match part {
        Part::Embed => "token_embd.weight".into(),
        Part::Norm => "output_norm.weight".into(),
        Part::LmHead => "output.weight".into(),
        Part::Layer(l, p) => {
            let s = match p {
                InputNorm => "attn_norm.weight",
                QW => "attn_q.weight",
                QB => "attn_q.bias",
                KW => "attn_k.weight",
                KB => "attn_k.bias",
                VW => "attn_v.weight",
                VB => "attn_v.bias",
                QNorm => "attn_q_norm.weight",
                KNorm => "attn_k_norm.weight",
                OW => "attn_output.weight",
                PostNorm => "ffn_norm.weight",
                Gate => "ffn_gate.weight",
                Up => "ffn_up.weight",
                Down => "ffn_down.weight",
            };
            format!("blk.{l}.{s}")
        }
    }
}

/// How a checkpoint's file format names tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// A Hugging Face (safetensors) checkpoint.
    Hf(HfNaming),
    /// A GGUF file.
    Gguf,
}

impl Naming {
    /// The name of `part` in this format.
    pub fn name(self, part: Part) -> String {
        match self {
            Self::Hf(n) => hf_name(part, n),
            Self::Gguf => gguf_name(part),
        }
    }

    /// Tensors a checkpoint may hold beyond those required, with their shape: the
    /// stored copy of a tied `lm_head` some Hugging Face checkpoints keep
    /// (transformers ties it to the embeddings whatever the file holds).
    pub fn tolerated(self, cfg: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
        match self {
            Self::Hf(n) if cfg.tie_word_embeddings => {
                vec![(
                    hf_name(Part::LmHead, n),
                    vec![cfg.vocab_size, cfg.hidden_size],
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// The most problems one strict-loading error lists (the rest are counted).
const SHOWN: usize = 12;

/// Checks that a checkpoint holding the tensors `shapes` has exactly those `cfg`
/// requires under `naming`, with their shapes (tolerated extras must have theirs).
/// One invalid-model error lists every missing, mis-shaped and unexpected tensor
/// by name (the first dozen); the check stops there, so a config declaring far more
/// layers than the file holds costs no more than a dozen lookups past the file.
pub fn check_strict(
    cfg: &DecoderConfig,
    shapes: &BTreeMap<String, Vec<usize>>,
    naming: Naming,
) -> Result<(), BackendError> {
    let mut left = shapes.clone();
    let mut problems = Vec::new();
    let mut cut = false;
    for (part, want) in expected(cfg) {
        let n = naming.name(part);
        match left.remove(&n) {
            None => problems.push(format!("missing tensor `{n}` (shape {want:?})")),
            Some(got) if got != want => {
                problems.push(format!("tensor `{n}` has shape {got:?}, expected {want:?}"));
            }
            Some(_) => {}
        }
        if problems.len() > SHOWN {
            cut = true;
            break;
        }
    }
    for (n, want) in naming.tolerated(cfg) {
        if let Some(got) = left.remove(&n)
            && got != want
        {
            problems.push(format!("tensor `{n}` has shape {got:?}, expected {want:?}"));
        }
    }
    for (n, s) in left {
        problems.push(format!(
            "unexpected tensor `{n}` (shape {s:?}) for a {} model with {} layers",
            cfg.architecture, cfg.num_hidden_layers
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut message = problems[..problems.len().min(SHOWN)].join("; ");
    if cut {
        message.push_str("; … and more");
    } else if problems.len() > SHOWN {
        message.push_str(&format!("; … and {} more", problems.len() - SHOWN));
    }
    Err(BackendError::invalid_model(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, RopeStyle};

    fn cfg(architecture: Architecture) -> DecoderConfig {
        DecoderConfig {
            architecture,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 6,
            vocab_size: 10,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            attention_bias: architecture == Architecture::Qwen2,
            qk_norm: architecture.qk_norm(),
            rope_style: RopeStyle::Halved,
        }
    }

    fn shapes(cfg: &DecoderConfig, naming: Naming) -> BTreeMap<String, Vec<usize>> {
        expected(cfg).map(|(p, s)| (naming.name(p), s)).collect()
    }

    #[test]
    fn qwen3_has_head_norms_and_no_biases() {
        let names: Vec<String> = expected(&cfg(Architecture::Qwen3))
            .map(|(p, _)| hf_name(p, HfNaming::CausalLm))
            .collect();
        assert!(names.contains(&"model.layers.1.self_attn.q_norm.weight".to_string()));
        assert!(!names.iter().any(|n| n.ends_with(".bias")));
        assert_eq!(names.len(), 2 + 2 * 11);
        let q =
            expected(&cfg(Architecture::Qwen3)).find(|(p, _)| *p == Part::Layer(0, LayerPart::QW));
        assert_eq!(
            q.map(|(_, s)| s),
            Some(vec![12, 8]),
            "q width is heads × head_dim"
        );
        let n = expected(&cfg(Architecture::Qwen2)).count();
        assert_eq!(n, 2 + 2 * 12);
    }

    #[test]
    fn a_complete_checkpoint_passes_in_both_namings() {
        let c = cfg(Architecture::Qwen3);
        for naming in [
            Naming::Gguf,
            Naming::Hf(HfNaming::CausalLm),
            Naming::Hf(HfNaming::Base),
        ] {
            let s = shapes(&c, naming);
            assert!(check_strict(&c, &s, naming).is_ok());
            if let Naming::Hf(n) = naming {
                assert_eq!(HfNaming::detect(&s), n);
            }
        }
    }

    #[test]
    fn names_every_problem() {
        let c = cfg(Architecture::Qwen2);
        let naming = Naming::Hf(HfNaming::CausalLm);
        let mut s = shapes(&c, naming);
        s.remove("model.layers.1.self_attn.k_proj.bias");
        s.insert("model.layers.0.mlp.up_proj.weight".into(), vec![16, 9]);
        s.insert("model.layers.2.input_layernorm.weight".into(), vec![8]);
        s.insert("lm_head.weight".into(), vec![10, 8]);
        let e = check_strict(&c, &s, naming).unwrap_err().message;
        assert!(
            e.contains("missing tensor `model.layers.1.self_attn.k_proj.bias` (shape [6])"),
            "{e}"
        );
        assert!(
            e.contains("`model.layers.0.mlp.up_proj.weight` has shape [16, 9], expected [16, 8]"),
            "{e}"
        );
        assert!(
            e.contains("unexpected tensor `model.layers.2.input_layernorm.weight`"),
            "{e}"
        );
        assert!(
            !e.contains("lm_head"),
            "a tied head's stored copy is tolerated: {e}"
        );
        s.insert("lm_head.weight".into(), vec![10, 7]);
        let e = check_strict(&c, &s, naming).unwrap_err().message;
        assert!(e.contains("`lm_head.weight` has shape [10, 7]"), "{e}");
    }

    #[test]
    fn a_huge_layer_count_fails_fast() {
        let mut c = cfg(Architecture::Qwen2);
        let s = shapes(&c, Naming::Gguf);
        c.num_hidden_layers = crate::config::MAX_LAYERS;
        let e = check_strict(&c, &s, Naming::Gguf).unwrap_err().message;
        assert!(e.contains("missing tensor `blk.2.attn_norm.weight`"), "{e}");
        assert!(e.contains("more"), "{e}");
    }
}
