//! The assembly of a [`Qwen2Model`] from any tensor source (safetensors directory or
//! GGUF file), after the strict check of [`gllm_arch::schema`].

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use gllm_api::LoadProgress;

use gllm_arch::schema::{self, Naming};
use gllm_arch::{DecoderConfig, LayerPart, Part};

use crate::error::Result;
use crate::linear::{Linear, Matrix, Projections};
use crate::model::{Layer, Qwen2Model};

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

/// Checks that `src` holds exactly the tensors `cfg` requires under `naming`
/// ([`gllm_arch::schema::check_strict`]).
pub fn check_strict(cfg: &DecoderConfig, src: &dyn TensorSource, naming: Naming) -> Result<()> {
    Ok(schema::check_strict(cfg, &src.shapes(), naming)?)
}

/// Builds the model from a checked source, reporting the bytes read to `progress`.
pub fn build(
    cfg: DecoderConfig,
    src: &dyn TensorSource,
    naming: Naming,
    device: Device,
    progress: &LoadProgress,
) -> Result<Qwen2Model> {
    use LayerPart::*;
    let name = |part: Part| naming.name(part);
    let total = schema::expected(&cfg)
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
        let head_norm = |p: LayerPart| -> Result<Option<Tensor>> {
            cfg.qk_norm.then(|| src.vector(&n(p))).transpose()
        };
        layers.push(Layer {
            input_norm: src.vector(&n(InputNorm))?,
            q_norm: head_norm(QNorm)?,
            k_norm: head_norm(KNorm)?,
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
