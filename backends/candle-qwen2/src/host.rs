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
use crate::linear::on_host;
use crate::model::{Layer, Qwen2Model, Segment};

/// Rows above which the norms run on rayon (candle-nn's threshold).
const PAR_ROWS: usize = 32;

/// The buffers of one pass, reused by every layer: after the first layer no
/// intermediate is allocated (or zeroed) again.
#[derive(Default)]
struct Scratch {
    /// A norm's output, [rows, hidden].
    h: Vec<f32>,
    /// The q/k/v projections side by side, [rows, q + k + v].
    qkv: Vec<f32>,
    /// The attention output, [rows, heads · d].
    att: Vec<f32>,
    /// The attention-output or down projection, [rows, hidden].
    out: Vec<f32>,
    /// Gate and up side by side, [rows, 2 · intermediate].
    ffn: Vec<f32>,
    /// SwiGLU, [rows, intermediate].
    act: Vec<f32>,
    /// One run's product where projections run as several matmuls (see
    /// [`crate::linear::Projections::forward_host`]).
    part: Vec<f32>,
}

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
        let mut scratch = Scratch::default();
        for (li, layer) in self.layers.iter().enumerate() {
            self.layer_host(layer, li, segments, &mut x, &ropes, &mut scratch)?;
        }
        for s in segments.iter_mut() {
            s.cache.len += s.tokens.len();
        }
        let mut out = Vec::new();
        rms_norm(&x, &self.norm, hidden, self.eps(), &mut out)?;
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
        sc: &mut Scratch,
    ) -> Result<()> {
        let (hidden, eps, d) = (self.cfg.hidden_size, self.eps(), self.cfg.head_dim);
        let shape = AttentionShape {
            heads: self.cfg.num_attention_heads,
            kv_heads: self.cfg.num_key_value_heads,
            head_dim: d,
        };
        let rows = x.len() / hidden;
        rms_norm(x, &l.input_norm, hidden, eps, &mut sc.h)?;
        l.qkv.forward_host(&sc.h, rows, &mut sc.qkv, &mut sc.part)?;
        let (qw, kw) = (shape.heads * d, shape.kv_heads * d);
        let width = qw + 2 * kw;
        if sc.qkv.len() != rows * width {
            return Err(internal(format!(
                "q/k/v projections are {} wide, not {width}",
                sc.qkv.len() / rows.max(1)
            )));
        }
        // The kernels and `attend` write every value: `resize` only zeroes growth.
        sc.att.resize(rows * qw, 0.0);
        let mut row = 0;
        for (s, (cos, sin)) in segments.iter_mut().zip(ropes) {
            let n = s.tokens.len();
            let offset = s.cache.len;
            let kv = s.cache.layer_mut(li)?;
            let seg = &sc.qkv[row * width..(row + n) * width];
            let [mut q, mut k, v] = [(0, qw), (qw, kw), (qw + kw, kw)].map(|(from, w)| {
                let mut part = Vec::with_capacity(n * w);
                for r in seg.chunks_exact(width) {
                    part.extend_from_slice(&r[from..from + w]);
                }
                part
            });
            if let Some(w) = &l.q_norm {
                q = rms_norm_owned(&q, w, d, eps)?;
            }
            if let Some(w) = &l.k_norm {
                k = rms_norm_owned(&k, w, d, eps)?;
            }
            let out = &mut sc.att[row * qw..(row + n) * qw];
            self.attend_rows(kv, shape, [q, k], &v, offset, cos, sin, out);
            row += n;
        }
        l.o.forward_host(&sc.att, rows, &mut sc.out)?;
        add_into(x, &sc.out);

        rms_norm(x, &l.post_norm, hidden, eps, &mut sc.h)?;
        l.gate_up
            .forward_host(&sc.h, rows, &mut sc.ffn, &mut sc.part)?;
        swiglu(&sc.ffn, rows, &mut sc.act)?;
        l.down.forward_host(&sc.act, rows, &mut sc.out)?;
        add_into(x, &sc.out);
        Ok(())
    }

    /// Attention of one segment's `n` new rows: RoPE on `q` and `k`, `k` and `v`
    /// appended to the layer's cache, every query head over its KV head, written to
    /// `out`: [n, heads · d].
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
        out: &mut [f32],
    ) {
        let d = shape.head_dim;
        rope_in_place(&mut q, shape.heads, d, cos, sin, self.cfg.rope_style);
        rope_in_place(&mut k, shape.kv_heads, d, cos, sin, self.cfg.rope_style);
        if self.kv_f16 {
            let (k_all, v_all) = kv.host16.append(offset, shape.kv_heads, d, &k, v);
            attend(&q, k_all, v_all, offset, shape, out);
        } else {
            let (k_all, v_all) = kv.host.append(offset, shape.kv_heads, d, &k, v);
            attend(&q, k_all, v_all, offset, shape, out);
        }
    }
}

/// RMSNorm of every `width`-wide row of `x` with `weight` [width], as candle-nn's
/// `rms_norm` computes it on the CPU: `x / sqrt(mean(x²) + eps) · weight`.
fn rms_norm(x: &[f32], weight: &Tensor, width: usize, eps: f32, out: &mut Vec<f32>) -> Result<()> {
    out.resize(x.len(), 0.0);
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
    })?
}

/// [`rms_norm`] into a new vector.
fn rms_norm_owned(x: &[f32], weight: &Tensor, width: usize, eps: f32) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    rms_norm(x, weight, width, eps, &mut out)?;
    Ok(out)
}

/// `x += y`, element by element.
pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// SwiGLU from the gate/up product `y` ([rows, 2 · w]: each row's gate, then its up):
/// `silu(gate) · up` into `out`, [rows, w].
fn swiglu(y: &[f32], rows: usize, out: &mut Vec<f32>) -> Result<()> {
    let w = y.len() / rows.max(1) / 2;
    if y.len() != rows * 2 * w {
        return Err(internal(format!(
            "gate/up product of {} values is not [{rows}, 2 x width]",
            y.len()
        )));
    }
    out.resize(rows * w, 0.0);
    gllm_kernels::exp::swiglu(y, w, out);
    Ok(())
}
