//! What a Qwen2/Llama checkpoint must hold, checked strictly, and the assembly of a
//! [`Qwen2Model`] from any tensor source (safetensors directory or GGUF file).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use gllm_api::LoadProgress;

use crate::config::Qwen2Config;
use crate::error::{Result, invalid_model};
use crate::linear::{Linear, Matrix, Projections};
use crate::model::{Layer, Qwen2Model};

/// One tensor of the decoder, independent of the file format's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Token embeddings.
    Embed,
    /// Final RMSNorm.
    Norm,
    /// Separate output projection.
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

/// A set of named tensors (one checkpoint).
pub trait TensorSource {
    /// Every tensor name with its shape (PyTorch order: [out, in] for matrices).
    fn shapes(&self) -> BTreeMap<String, Vec<usize>>;
    /// A 2-D tensor as a weight matrix.
    fn matrix(&self, name: &str) -> Result<Matrix>;
    /// A 1-D tensor as f32.
    fn vector(&self, name: &str) -> Result<Tensor>;
    /// The bytes a tensor occupies in the file (0 for a name it lacks), for progress.
    fn byte_len(&self, name: &str) -> u64;
}

/// A source that reports each tensor read to a [`LoadProgress`].
struct Counted<'a> {
    src: &'a dyn TensorSource,
    progress: &'a LoadProgress,
}

impl TensorSource for Counted<'_> {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.src.shapes()
    }

    fn matrix(&self, name: &str) -> Result<Matrix> {
        let m = self.src.matrix(name)?;
        self.progress.advance(self.src.byte_len(name));
        Ok(m)
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        let v = self.src.vector(name)?;
        self.progress.advance(self.src.byte_len(name));
        Ok(v)
    }

    fn byte_len(&self, name: &str) -> u64 {
        self.src.byte_len(name)
    }
}

/// The tensors a config requires, with their shapes.
pub fn expected(cfg: &Qwen2Config) -> Vec<(Part, Vec<usize>)> {
    use LayerPart::*;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let mut out = vec![(Part::Embed, vec![cfg.vocab_size, h])];
    for l in 0..cfg.num_hidden_layers {
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
        out.extend(parts.into_iter().map(|(p, s)| (Part::Layer(l, p), s)));
    }
    out.push((Part::Norm, vec![h]));
    if !cfg.tie_word_embeddings {
        out.push((Part::LmHead, vec![cfg.vocab_size, h]));
    }
    out
}

/// Checks that `src` holds exactly the tensors `cfg` requires (names from `name`), with
/// their shapes. `tolerated` names may be present too (their shape is still checked).
pub fn check_strict(
    cfg: &Qwen2Config,
    src: &dyn TensorSource,
    name: &dyn Fn(Part) -> String,
    tolerated: &[(String, Vec<usize>)],
) -> Result<()> {
    let mut shapes = src.shapes();
    for (part, want) in expected(cfg) {
        let n = name(part);
        match shapes.remove(&n) {
            None => {
                return Err(invalid_model(format!(
                    "missing tensor `{n}` (shape {want:?})"
                )));
            }
            Some(got) if got != want => {
                return Err(invalid_model(format!(
                    "tensor `{n}` has shape {got:?}, expected {want:?}"
                )));
            }
            Some(_) => {}
        }
    }
    for (n, want) in tolerated {
        if let Some(got) = shapes.remove(n)
            && &got != want
        {
            return Err(invalid_model(format!(
                "tensor `{n}` has shape {got:?}, expected {want:?}"
            )));
        }
    }
    if let Some((n, s)) = shapes.into_iter().next() {
        return Err(invalid_model(format!(
            "unexpected tensor `{n}` (shape {s:?}) for a {} model with {} layers",
            cfg.architecture, cfg.num_hidden_layers
        )));
    }
    Ok(())
}

/// Builds the model from a checked source, reporting the bytes read to `progress`.
pub fn build(
    cfg: Qwen2Config,
    src: &dyn TensorSource,
    name: &dyn Fn(Part) -> String,
    device: Device,
    progress: &LoadProgress,
) -> Result<Qwen2Model> {
    use LayerPart::*;
    let total = expected(&cfg)
        .into_iter()
        .map(|(part, _)| src.byte_len(&name(part)))
        .fold(0u64, u64::saturating_add);
    progress.set_total(total);
    let counted = Counted { src, progress };
    let src: &dyn TensorSource = &counted;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let n = |p: LayerPart| name(Part::Layer(l, p));
        let lin = |w: LayerPart, b: Option<LayerPart>| -> Result<Linear> {
            let bias = match b {
                Some(b) if cfg.attention_bias => Some(src.vector(&n(b))?),
                _ => None,
            };
            Ok(Linear {
                weight: src.matrix(&n(w))?,
                bias,
            })
        };
        layers.push(Layer {
            input_norm: src.vector(&n(InputNorm))?,
            qkv: Projections::new(vec![
                lin(QW, Some(QB))?,
                lin(KW, Some(KB))?,
                lin(VW, Some(VB))?,
            ]),
            o: lin(OW, None)?,
            post_norm: src.vector(&n(PostNorm))?,
            gate_up: Projections::new(vec![lin(Gate, None)?, lin(Up, None)?]),
            down: lin(Down, None)?,
        });
    }
    let embed = src.matrix(&name(Part::Embed))?;
    let norm = src.vector(&name(Part::Norm))?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(src.matrix(&name(Part::LmHead))?)
    };
    Ok(Qwen2Model::new(cfg, device, embed, layers, norm, lm_head))
}
