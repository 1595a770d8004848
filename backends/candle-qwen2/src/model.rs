//! The Qwen2 / Llama decoder: embeddings, decoder layers (RMSNorm, RoPE, grouped-query
//! attention over the caller's KV cache, SwiGLU MLP), final norm and output projection.
//! Activations are f32; weights are in whatever form the loader produced.

use candle_core::{Device, Tensor};

use crate::cache::{LayerKv, Qwen2Cache};
use crate::error::{Result, internal, invalid_input};
use crate::linear::{Linear, Matrix, Projections};
use gllm_arch::{DecoderConfig, RopeStyle};

/// The most positions of one sequence that go through the layers in one pass; longer
/// prompts are prefilled in chunks of this many (the weights are still read once per
/// tile of rows, so throughput is that of one pass).
pub const PREFILL_CHUNK: usize = 512;

/// One decoder layer.
#[derive(Debug)]
pub struct Layer {
    /// RMSNorm before attention [hidden].
    pub input_norm: Tensor,
    /// RMSNorm over each query head before RoPE [head_dim] (Qwen3).
    pub q_norm: Option<Tensor>,
    /// RMSNorm over each key head before RoPE [head_dim] (Qwen3).
    pub k_norm: Option<Tensor>,
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
    pub cfg: DecoderConfig,
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
    /// On the CPU, run the layers with candle's tensor ops (the path of other devices)
    /// rather than over plain rows ([`crate::host`]): option `cpu_tensor_ops`, which
    /// lets the CPU test that path.
    pub tensor_ops: bool,
    /// The CPU KV cache holds f16 rather than f32 (option `kv_cache = "f16"`).
    pub kv_f16: bool,
    inv_freq: Vec<f32>,
}

impl Qwen2Model {
    /// Assembles a model from loaded parts.
    pub fn new(
        cfg: DecoderConfig,
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
            tensor_ops: false,
            kv_f16: false,
            inv_freq,
        }
    }

    /// The output projection.
    pub fn output(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Cosines and sines of positions `offset..offset + n`, each [n, head_dim / 2].
    pub(crate) fn rope_tables(&self, offset: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
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
        self.forward_segments(&mut [Segment { cache, tokens }])
    }

    /// Appends each segment's tokens to its cache and returns the final hidden states
    /// of all new positions, segment after segment. The matmuls take every segment's
    /// rows at once (attention runs per segment over its own cache), in rounds of at
    /// most [`PREFILL_CHUNK`] positions per segment: a long prompt is prefilled chunk by
    /// chunk, so activation memory stays bounded whatever its length.
    pub fn forward_segments(&self, segments: &mut [Segment<'_>]) -> Result<Tensor> {
        for s in segments.iter() {
            self.check_input(s.cache.len, s.tokens)?;
            if s.cache.layers.len() != self.layers.len() {
                return Err(internal("KV cache has the wrong number of layers"));
            }
        }
        let longest = segments.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
        if longest <= PREFILL_CHUNK {
            return self.forward_round(segments);
        }
        // Per segment, the hidden states of each round it took part in.
        let mut parts: Vec<Vec<Tensor>> = segments.iter().map(|_| Vec::new()).collect();
        for start in (0..longest).step_by(PREFILL_CHUNK) {
            let mut round = Vec::new();
            let mut who = Vec::new();
            for (i, s) in segments.iter_mut().enumerate() {
                if start < s.tokens.len() {
                    let end = (start + PREFILL_CHUNK).min(s.tokens.len());
                    round.push(Segment {
                        cache: &mut *s.cache,
                        tokens: &s.tokens[start..end],
                    });
                    who.push((i, end - start));
                }
            }
            let h = self.forward_round(&mut round)?;
            let mut row = 0;
            for (i, n) in who {
                parts[i].push(h.narrow(0, row, n)?);
                row += n;
            }
        }
        let all: Vec<Tensor> = parts.into_iter().flatten().collect();
        Ok(Tensor::cat(&all, 0)?)
    }

    /// One pass of [`Self::forward_segments`] over segments already checked: on the
    /// CPU over plain rows ([`crate::host`]), elsewhere with candle's tensor ops.
    fn forward_round(&self, segments: &mut [Segment<'_>]) -> Result<Tensor> {
        if self.device.is_cpu() && !self.tensor_ops {
            return self.forward_round_host(segments);
        }
        let all: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let mut x = self.embed.rows_f32(&all, &self.device)?;
        let ropes = segments
            .iter()
            .map(|s| self.rope_for(s.cache.len, s.tokens.len()))
            .collect::<Result<Vec<_>>>()?;
        for (li, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, li, segments, &x, &ropes)?;
        }
        for s in segments.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        let eps = self.cfg.rms_norm_eps as f32;
        Ok(candle_nn::ops::rms_norm(&x, &self.norm, eps)?)
    }

    /// The rotary tables and, for more than one position, the causal mask for `n`
    /// positions from `offset`, as tensors.
    fn rope_for(&self, offset: usize, n: usize) -> Result<Rope> {
        let (cos, sin) = self.rope_tables(offset, n);
        let half = self.inv_freq.len();
        Ok(Rope {
            cos: Tensor::from_vec(cos, (n, half), &self.device)?,
            sin: Tensor::from_vec(sin, (n, half), &self.device)?,
            mask: if n > 1 {
                Some(causal_mask(offset, n, &self.device)?)
            } else {
                None
            },
        })
    }

    /// Appends `tokens` and returns the logits of the last position.
    pub fn forward(&self, cache: &mut Qwen2Cache, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = self.forward_batch(&mut [Segment { cache, tokens }])?;
        logits
            .pop()
            .ok_or_else(|| internal("forward produced no logits"))
    }

    /// Appends each segment's tokens to its cache and returns each segment's
    /// last-position logits, in order; one pass for all (see [`Self::forward_segments`]).
    pub fn forward_batch(&self, segments: &mut [Segment<'_>]) -> Result<Vec<Vec<f32>>> {
        let h = self.forward_segments(segments)?;
        let mut last = Vec::with_capacity(segments.len());
        let mut end = 0;
        for s in segments.iter() {
            end += s.tokens.len();
            last.push(h.narrow(0, end - 1, 1)?);
        }
        let last = Tensor::cat(&last, 0)?;
        let logits = self.output().matmul_t(&last)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    fn layer_forward(
        &self,
        l: &Layer,
        li: usize,
        segments: &mut [Segment<'_>],
        x: &Tensor,
        ropes: &[Rope],
    ) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &l.input_norm, eps)?;
        let [q, k, v]: [Tensor; 3] = l
            .qkv
            .forward(&h)?
            .try_into()
            .map_err(|_| internal("q/k/v projections did not give three outputs"))?;
        let q = head_norm(q, l.q_norm.as_ref(), self.cfg.head_dim, eps)?;
        let k = head_norm(k, l.k_norm.as_ref(), self.cfg.head_dim, eps)?;
        let mut atts = Vec::with_capacity(segments.len());
        let mut row = 0;
        for (s, rope) in segments.iter_mut().zip(ropes) {
            let n = s.tokens.len();
            let offset = s.cache.len;
            let kv = s.cache.layer_mut(li)?;
            let part = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(0, row, n)?) };
            let qkv = [part(&q)?, part(&k)?, part(&v)?];
            atts.push(self.attention_tensors(
                kv,
                qkv,
                offset,
                &rope.cos,
                &rope.sin,
                rope.mask.as_ref(),
            )?);
            row += n;
        }
        let att = if atts.len() == 1 {
            atts.swap_remove(0)
        } else {
            Tensor::cat(&atts, 0)?
        };
        let x = (x + l.o.forward(&att)?)?;

        let h = candle_nn::ops::rms_norm(&x, &l.post_norm, eps)?;
        let [gate, up]: [Tensor; 2] = l
            .gate_up
            .forward(&h)?
            .try_into()
            .map_err(|_| internal("gate/up projections did not give two outputs"))?;
        let act = (candle_nn::ops::silu(&gate)? * up)?;
        let mlp = l.down.forward(&act)?;
        Ok((x + mlp)?)
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

/// One sequence's part of a forward pass: its cache and the tokens to append.
pub struct Segment<'a> {
    /// The sequence's KV cache.
    pub cache: &'a mut Qwen2Cache,
    /// Tokens to append (at least one).
    pub tokens: &'a [u32],
}

/// Rotary tables [n, head_dim / 2] and, for n > 1, the causal mask of one segment.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

/// RMSNorm over each head of `x` ([rows, heads · d]) with `weight` [d], when given.
fn head_norm(x: Tensor, weight: Option<&Tensor>, d: usize, eps: f32) -> Result<Tensor> {
    let Some(w) = weight else {
        return Ok(x);
    };
    let (rows, width) = x.dims2()?;
    let per_head = x.reshape((rows * (width / d), d))?;
    Ok(candle_nn::ops::rms_norm(&per_head, w, eps)?.reshape((rows, width))?)
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
