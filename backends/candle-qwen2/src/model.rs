//! The Qwen2 / Llama decoder: embeddings, decoder layers (RMSNorm, RoPE, grouped-query
//! attention over the caller's KV cache, SwiGLU MLP), final norm and output projection.
//! Activations are f32; weights are in whatever form the loader produced.

use candle_core::{Device, Tensor};

use crate::attention::{AttentionShape, attend, rope_in_place};
use crate::cache::{LayerKv, Qwen2Cache};
use crate::config::{Qwen2Config, RopeStyle};
use crate::error::{Result, internal, invalid_input};
use crate::linear::{Linear, Matrix, Projections};

/// One decoder layer.
#[derive(Debug)]
pub struct Layer {
    /// RMSNorm before attention [hidden].
    pub input_norm: Tensor,
    /// Query, key and value projections (fused into one matmul where possible).
    pub qkv: Projections,
    /// Attention output projection.
    pub o: Linear,
    /// RMSNorm before the MLP [hidden].
    pub post_norm: Tensor,
    /// SwiGLU gate and up projections (fused where possible).
    pub gate_up: Projections,
    /// MLP down projection.
    pub down: Linear,
}

/// A loaded decoder (immutable; sequences live in [`Qwen2Cache`]s).
#[derive(Debug)]
pub struct Qwen2Model {
    /// Hyper-parameters.
    pub cfg: Qwen2Config,
    /// Where activations live.
    pub device: Device,
    /// Token embeddings [vocab, hidden].
    pub embed: Matrix,
    /// Decoder layers.
    pub layers: Vec<Layer>,
    /// Final RMSNorm [hidden].
    pub norm: Tensor,
    /// Output projection [vocab, hidden]; `None` when tied to the embeddings.
    pub lm_head: Option<Matrix>,
    inv_freq: Vec<f32>,
}

impl Qwen2Model {
    /// Assembles a model from loaded parts.
    pub fn new(
        cfg: Qwen2Config,
        device: Device,
        embed: Matrix,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Option<Matrix>,
    ) -> Self {
        let d = cfg.head_dim;
        // As transformers computes it: inv_freq in f32, then position * inv_freq in f32.
        let inv_freq = (0..d / 2)
            .map(|i| (1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64)) as f32)
            .collect();
        Self {
            cfg,
            device,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
        }
    }

    /// The output projection.
    pub fn output(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Cosines and sines of positions `offset..offset + n`, each [n, head_dim / 2].
    fn rope_tables(&self, offset: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in offset..offset + n {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.rope_style {
            RopeStyle::Halved => candle_nn::rotary_emb::rope(x, cos, sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
        })
    }

    /// Checks the tokens against the vocabulary and the cache against the context limit.
    pub fn check_input(&self, cache_len: usize, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(invalid_input("no tokens to append"));
        }
        if let Some(bad) = tokens.iter().find(|t| **t as usize >= self.cfg.vocab_size) {
            return Err(invalid_input(format!(
                "token id {bad} is out of range for a vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let total = cache_len + tokens.len();
        if total > self.cfg.max_position_embeddings {
            return Err(invalid_input(format!(
                "context overflow: {cache_len} cached + {} new positions exceed the model's {}",
                tokens.len(),
                self.cfg.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Appends `tokens` to the cache and returns the final hidden states (after the
    /// final RMSNorm) of the new positions: [tokens.len(), hidden].
    pub fn forward_hidden(&self, cache: &mut Qwen2Cache, tokens: &[u32]) -> Result<Tensor> {
        self.check_input(cache.len, tokens)?;
        if cache.layers.len() != self.layers.len() {
            return Err(internal("KV cache has the wrong number of layers"));
        }
        let offset = cache.len;
        let n = tokens.len();
        let mut x = self.embed.rows_f32(tokens, &self.device)?;
        let (cos, sin) = self.rope_tables(offset, n);
        let rope = if self.device.is_cpu() {
            Rope::Host { cos, sin }
        } else {
            let half = self.inv_freq.len();
            Rope::Tensors {
                cos: Tensor::from_vec(cos, (n, half), &self.device)?,
                sin: Tensor::from_vec(sin, (n, half), &self.device)?,
                mask: if n > 1 {
                    Some(causal_mask(offset, n, &self.device)?)
                } else {
                    None
                },
            }
        };
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.layer_forward(layer, kv, &x, offset, &rope)?;
        }
        cache.len = offset + n;
        let eps = self.cfg.rms_norm_eps as f32;
        Ok(candle_nn::ops::rms_norm(&x, &self.norm, eps)?)
    }

    /// Appends `tokens` and returns the logits of the last position.
    pub fn forward(&self, cache: &mut Qwen2Cache, tokens: &[u32]) -> Result<Vec<f32>> {
        let h = self.forward_hidden(cache, tokens)?;
        let last = h.narrow(0, tokens.len() - 1, 1)?;
        let logits = self.output().matmul_t(&last)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    fn layer_forward(
        &self,
        l: &Layer,
        kv: &mut LayerKv,
        x: &Tensor,
        offset: usize,
        rope: &Rope,
    ) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &l.input_norm, eps)?;
        let [q, k, v]: [Tensor; 3] = l
            .qkv
            .forward(&h)?
            .try_into()
            .map_err(|_| internal("q/k/v projections did not give three outputs"))?;
        let att = match rope {
            Rope::Host { cos, sin } => self.attention_host(kv, [q, k, v], offset, cos, sin)?,
            Rope::Tensors { cos, sin, mask } => {
                self.attention_tensors(kv, [q, k, v], offset, cos, sin, mask.as_ref())?
            }
        };
        let x = (x + l.o.forward(&att)?)?;

        let h = candle_nn::ops::rms_norm(&x, &l.post_norm, eps)?;
        let [gate, up]: [Tensor; 2] = l
            .gate_up
            .forward(&h)?
            .try_into()
            .map_err(|_| internal("gate/up projections did not give two outputs"))?;
        let mlp = l.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
        Ok((x + mlp)?)
    }

    /// Attention on the CPU (see [`crate::attention`]): [n, hq · d].
    fn attention_host(
        &self,
        kv: &mut LayerKv,
        [q, k, v]: [Tensor; 3],
        offset: usize,
        cos: &[f32],
        sin: &[f32],
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let shape = AttentionShape {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        let d = cfg.head_dim;
        let host =
            |t: Tensor| -> Result<Vec<f32>> { Ok(t.contiguous()?.flatten_all()?.to_vec1()?) };
        let (mut q, mut k, v) = (host(q)?, host(k)?, host(v)?);
        let n = q.len() / (shape.heads * d);
        rope_in_place(&mut q, shape.heads, d, cos, sin, cfg.rope_style);
        rope_in_place(&mut k, shape.kv_heads, d, cos, sin, cfg.rope_style);
        let (k_all, v_all) = kv.append_host(offset, shape.kv_heads * d, &k, &v);
        let mut out = vec![0f32; q.len()];
        attend(&q, k_all, v_all, offset, shape, &mut out);
        Ok(Tensor::from_vec(out, (n, shape.heads * d), &self.device)?)
    }

    /// Attention with candle tensor ops (devices other than the CPU): [n, hq · d].
    fn attention_tensors(
        &self,
        kv: &mut LayerKv,
        [q, k, v]: [Tensor; 3],
        offset: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = q.dim(0)?;
        let (hq, hkv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let g = hq / hkv;
        let heads = |t: Tensor, count: usize| -> Result<Tensor> {
            Ok(t.reshape((n, count, d))?.transpose(0, 1)?.contiguous()?)
        };
        let q = heads(q, hq)?.unsqueeze(0)?;
        let k = heads(k, hkv)?.unsqueeze(0)?;
        let v = heads(v, hkv)?;
        let q = self.rope(&q, cos, sin)?.squeeze(0)?;
        let k = self.rope(&k, cos, sin)?.squeeze(0)?;

        let (k_all, v_all) = kv.append(offset, &k, &v)?;
        let t = offset + n;
        // [hq, n, d] = [hkv, g, n, d] -> [hkv, g * n, d]: each KV head serves its group.
        let q = q.reshape((hkv, g * n, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut att = (q.matmul(&k_all.t()?)? * scale)?;
        if let Some(mask) = mask {
            att = att
                .reshape((hkv, g, n, t))?
                .broadcast_add(mask)?
                .reshape((hkv, g * n, t))?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let out = att.matmul(&v_all.contiguous()?)?; // [hkv, g * n, d]
        Ok(out
            .reshape((hq, n, d))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, hq * d))?)
    }
}

/// Rotary tables (and, off the CPU, the causal mask) of one forward call.
enum Rope {
    /// Plain cosines and sines, [n, head_dim / 2] each.
    Host { cos: Vec<f32>, sin: Vec<f32> },
    /// The same as tensors, with the mask for n > 1.
    Tensors {
        cos: Tensor,
        sin: Tensor,
        mask: Option<Tensor>,
    },
}

/// [n, offset + n]: 0 where query `i` (at position `offset + i`) may attend, -inf after it.
fn causal_mask(offset: usize, n: usize, device: &Device) -> Result<Tensor> {
    let t = offset + n;
    let mut m = vec![0f32; n * t];
    for i in 0..n {
        for v in &mut m[i * t + offset + i + 1..(i + 1) * t] {
            *v = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (n, t), device)?)
}

/// Arg-max of the last dimension, for tests and examples.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    logits
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, v)| match best {
            Some((_, b)) if b >= *v => best,
            _ => Some((i, *v)),
        })
        .map(|(i, _)| i as u32)
}
