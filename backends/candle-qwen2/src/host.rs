//! The decoder's forward pass on the CPU over plain f32 rows.
//!
//! Between the weight kernels (gllm-kernels, on rayon) a layer only needs norms,
//! residual adds, RoPE, attention and SwiGLU over a few rows. Done with candle's CPU
//! tensor ops, each of those is dispatched to candle's own thread pool, whose workers
//! spin after every op on the cores rayon's workers need next: on two cores that cost
//! about 8% of an f16 prefill. Here they run on the slices directly, with the same
//! arithmetic as candle's ops (the norms are candle-nn's `rms_norm`, element for
//! element), and only the final hidden states become a tensor.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::attention::{AttentionShape, attend, rope_in_place};
use crate::cache::LayerKv;
use crate::error::{Result, internal};
use crate::linear::{Linear, Matrix, Projections, on_host};
use crate::model::{Layer, Qwen2Model, Segment};

/// Rows above which the norms run on rayon (candle-nn's threshold).
const PAR_ROWS: usize = 32;

impl Qwen2Model {
    /// [`Qwen2Model::forward_segments`]'s pass on the CPU: the final hidden states of
    /// every segment's new positions, [rows, hidden].
    pub(crate) fn forward_round_host(&self, segments: &mut [Segment<'_>]) -> Result<Tensor> {
        let all: Vec<u32> = segments
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let hidden = self.cfg.hidden_size;
        let mut x = self.embed.rows_host(&all)?;
        let ropes: Vec<(Vec<f32>, Vec<f32>)> = segments
            .iter()
            .map(|s| self.rope_tables(s.cache.len, s.tokens.len()))
            .collect();
        for (li, layer) in self.layers.iter().enumerate() {
            self.layer_host(layer, li, segments, &mut x, &ropes)?;
        }
        for s in segments.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        let out = rms_norm(&x, &self.norm, hidden, self.eps())?;
        Ok(Tensor::from_vec(out, (all.len(), hidden), &Device::Cpu)?)
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    /// One decoder layer, updating the residual stream `x` [rows, hidden] in place.
    fn layer_host(
        &self,
        l: &Layer,
        li: usize,
        segments: &mut [Segment<'_>],
        x: &mut [f32],
        ropes: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<()> {
        let (hidden, eps, d) = (self.cfg.hidden_size, self.eps(), self.cfg.head_dim);
        let shape = AttentionShape {
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_key_value_heads,
            head_dim: d,
        };
        let rows = x.len() / hidden;
        let h = rms_norm(x, &l.input_norm, hidden, eps)?;
        let [mut q, mut k, v]: [Vec<f32>; 3] = l
            .qkv
            .forward_host(&h, rows)?
            .try_into()
            .map_err(|_| internal("q/k/v projections did not give three outputs"))?;
        if let Some(w) = &l.q_norm {
            q = rms_norm(&q, w, d, eps)?;
        }
        if let Some(w) = &l.k_norm {
            k = rms_norm(&k, w, d, eps)?;
        }
        let (qw, kw) = (shape.heads * d, shape.kv_heads * d);
        let mut att = Vec::with_capacity(rows * qw);
        let mut row = 0;
        for (s, (cos, sin)) in segments.iter_mut().zip(ropes) {
            let n = s.tokens.len();
            let offset = s.cache.len;
            let kv = s
                .cache
                .layers
                .get_mut(li)
                .ok_or_else(|| internal("KV cache has the wrong number of layers"))?;
            let q = q[row * qw..(row + n) * qw].to_vec();
            let k = k[row * kw..(row + n) * kw].to_vec();
            let v = &v[row * kw..(row + n) * kw];
            att.extend(self.attend_rows(kv, shape, [q, k], v, offset, cos, sin));
            row += n;
        }
        add_into(x, &l.o.forward_host(&att, rows)?);

        let h = rms_norm(x, &l.post_norm, hidden, eps)?;
        let act = match l.gate_up.fused() {
            Some((fused, &[gw, uw])) if gw == uw => {
                swiglu_fused(&fused.forward_host(&h, rows)?, rows, gw)
            }
            _ => {
                let [gate, up]: [Vec<f32>; 2] = l
                    .gate_up
                    .forward_host(&h, rows)?
                    .try_into()
                    .map_err(|_| internal("gate/up projections did not give two outputs"))?;
                let mut act = vec![0f32; gate.len()];
                gllm_kernels::exp::silu_mul(&gate, &up, &mut act);
                act
            }
        };
        add_into(x, &l.down.forward_host(&act, rows)?);
        Ok(())
    }

    /// Attention of one segment's `n` new rows: RoPE on `q` and `k`, `k` and `v`
    /// appended to the layer's cache, every query head over its KV head: [n, heads · d].
    #[allow(clippy::too_many_arguments)]
    fn attend_rows(
        &self,
        kv: &mut LayerKv,
        shape: AttentionShape,
        [mut q, mut k]: [Vec<f32>; 2],
        v: &[f32],
        offset: usize,
        cos: &[f32],
        sin: &[f32],
    ) -> Vec<f32> {
        let d = shape.head_dim;
        rope_in_place(&mut q, shape.heads, d, cos, sin, self.cfg.rope_style);
        rope_in_place(&mut k, shape.kv_heads, d, cos, sin, self.cfg.rope_style);
        let (k_all, v_all) = kv.append_host(offset, shape.kv_heads, d, &k, v);
        let mut out = vec![0f32; q.len()];
        attend(&q, k_all, v_all, offset, shape, &mut out);
        out
    }
}

/// RMSNorm of every `width`-wide row of `x` with `weight` [width], as candle-nn's
/// `rms_norm` computes it on the CPU: `x / sqrt(mean(x²) + eps) · weight`.
fn rms_norm(x: &[f32], weight: &Tensor, width: usize, eps: f32) -> Result<Vec<f32>> {
    let mut out = vec![0f32; x.len()];
    on_host(weight, |w| {
        if w.len() != width {
            return Err(internal(format!(
                "norm weight has {} values for rows {width} wide",
                w.len()
            )));
        }
        let row = |(src, dst): (&[f32], &mut [f32])| {
            let sum2: f32 = src.iter().map(|v| v * v).sum();
            let m = (sum2 / width as f32 + eps).sqrt();
            for ((d, s), a) in dst.iter_mut().zip(src).zip(w) {
                *d = *s / m * *a;
            }
        };
        if x.len() / width.max(1) <= PAR_ROWS {
            x.chunks_exact(width)
                .zip(out.chunks_exact_mut(width))
                .for_each(row);
        } else {
            x.par_chunks_exact(width)
                .zip(out.par_chunks_exact_mut(width))
                .for_each(row);
        }
        Ok(())
    })??;
    Ok(out)
}

/// `x += y`, element by element.
fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// SwiGLU from the fused gate/up product `y` ([rows, 2 · w]: each row's gate, then its
/// up): `silu(gate) · up`, [rows, w].
fn swiglu_fused(y: &[f32], rows: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * w];
    for (row, o) in y.chunks_exact(2 * w).zip(out.chunks_exact_mut(w)) {
        let (gate, up) = row.split_at(w);
        gllm_kernels::exp::silu_mul(gate, up, o);
    }
    out
}

impl Matrix {
    /// `x` [m, cols] times the transpose, on the host: [m, rows]. The repacked
    /// matrices run their kernels on the slice; the others go through candle.
    pub fn matmul_t_host(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let (rows, cols) = self.dims();
        if x.len() != m * cols {
            return Err(internal(format!(
                "matmul: {} inputs for {m} rows of width {cols}",
                x.len()
            )));
        }
        let mut out = vec![0f32; m * rows];
        match self {
            Matrix::Half(h) => h.matmul(x, m, &mut out),
            Matrix::Packed(p) => p.matmul(x, m, &mut out),
            Matrix::F32(_) | Matrix::Quant(_) => {
                let t = Tensor::from_slice(x, (m, cols), &Device::Cpu)?;
                out = self.matmul_t(&t)?.flatten_all()?.to_vec1()?;
            }
        }
        Ok(out)
    }

    /// Rows `ids` as f32 on the host: [ids.len() · cols]. Ids must be checked by the
    /// caller.
    pub fn rows_host(&self, ids: &[u32]) -> Result<Vec<f32>> {
        on_host(&self.rows_f32(ids, &Device::Cpu)?, <[f32]>::to_vec)
    }
}

impl Linear {
    /// [`Linear::forward`] on the host: `x` [m, in] → [m, out].
    pub fn forward_host(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut y = self.weight.matmul_t_host(x, m)?;
        if let Some(b) = &self.bias {
            let width = self.weight.dims().0;
            on_host(b, |b| {
                for row in y.chunks_exact_mut(width) {
                    add_into(row, b);
                }
            })?;
        }
        Ok(y)
    }
}

impl Projections {
    /// [`Projections::forward`] on the host: each part's output [m, width].
    pub fn forward_host(&self, x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Projections::Separate(ls) => ls.iter().map(|l| l.forward_host(x, m)).collect(),
            Projections::Fused(l, widths) => {
                let y = l.forward_host(x, m)?;
                let total: usize = widths.iter().sum();
                let mut parts: Vec<Vec<f32>> =
                    widths.iter().map(|w| Vec::with_capacity(m * w)).collect();
                for row in y.chunks_exact(total.max(1)) {
                    let mut off = 0;
                    for (part, w) in parts.iter_mut().zip(widths) {
                        part.extend_from_slice(&row[off..off + w]);
                        off += w;
                    }
                }
                Ok(parts)
            }
        }
    }
}
