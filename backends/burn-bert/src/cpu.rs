//! Host kernels for the CPU path: the element-wise work between Burn's
//! matmuls, fused into one pass each over buffers that Burn's `flex` backend
//! hands over without copying (bias + GELU; bias + residual + LayerNorm;
//! bias + head split into the attention layout; heads merged back).
//!
//! The CPU path keeps hidden states *packed*: the real tokens of every input
//! of a batch, one after the other, with no padding, so the matmuls (nearly
//! all of the work) never compute a padding row. Only attention sees the
//! batch padded, with padded keys masked.

use std::f32::consts::FRAC_1_SQRT_2;

use crate::config::Activation;

/// `erf` in single precision: `x · P(x²) / Q(x²)` on `[-4, 4]` (±1 beyond,
/// where erf rounds to ±1 in f32). Absolute error below 5e-7 (see the test; a few f32 ulps near ±1),
/// branch-free so that loops over it vectorize.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_600_1e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_3e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

/// `y = act(y + bias)` over rows of `bias.len()` values.
pub fn bias_activation(y: &mut [f32], bias: &[f32], act: Activation) {
    for row in y.chunks_exact_mut(bias.len()) {
        match act {
            Activation::Gelu => {
                for (v, b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    *v = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
                }
            }
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                for (v, b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    *v = 0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh());
                }
            }
            Activation::Relu => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = (*v + b).max(0.0);
                }
            }
        }
    }
}

/// Sum of a slice with eight independent accumulators (vectorizes).
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Sum of squared deviations from `mean` (vectorizes).
#[inline(always)]
fn sum_sq_dev(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            let d = x - mean;
            *a += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y = LayerNorm(y + bias + residual)` over rows of `bias.len()` values.
pub fn bias_residual_norm(
    y: &mut [f32],
    bias: &[f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let h = bias.len();
    for (row, res) in y.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
        for ((v, b), r) in row.iter_mut().zip(bias).zip(res) {
            *v += b + r;
        }
        norm_row(row, gamma, beta, eps);
    }
}

/// LayerNorm of one row in place (two passes: mean, then variance about it).
#[inline(always)]
pub fn norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = sum_sq_dev(row, mean) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * rstd * g + b;
    }
}

/// Where each input's tokens sit in a packed buffer.
pub struct Packing<'a> {
    /// Token count of each input.
    pub lens: &'a [usize],
    /// First packed row of each input.
    pub starts: &'a [usize],
    /// Longest input (the padded length of attention).
    pub max_len: usize,
}

/// Splits packed `qkv` rows (`[tokens, 3 * hidden]`, bias not yet added) into
/// query, key and value, each `[batch, heads, max_len, head_dim]` with zeros at padding.
pub fn split_heads(
    qkv: &[f32],
    bias: &[f32],
    p: &Packing,
    heads: usize,
    head_dim: usize,
) -> [Vec<f32>; 3] {
    let h = heads * head_dim;
    let s = p.max_len;
    let size = p.lens.len() * heads * s * head_dim;
    let mut out = [vec![0.0f32; size], vec![0.0f32; size], vec![0.0f32; size]];
    for (b, (&len, &start)) in p.lens.iter().zip(p.starts).enumerate() {
        for t in 0..len {
            let row = &qkv[(start + t) * 3 * h..(start + t + 1) * 3 * h];
            for (part, dst) in out.iter_mut().enumerate() {
                for head in 0..heads {
                    let src = &row[part * h + head * head_dim..part * h + (head + 1) * head_dim];
                    let bias = &bias[part * h + head * head_dim..part * h + (head + 1) * head_dim];
                    let at = ((b * heads + head) * s + t) * head_dim;
                    for ((d, x), c) in dst[at..at + head_dim].iter_mut().zip(src).zip(bias) {
                        *d = x + c;
                    }
                }
            }
        }
    }
    out
}

/// Gathers attention output `[batch, heads, max_len, head_dim]` back into packed rows `[tokens, hidden]`.
pub fn merge_heads(ctx: &[f32], p: &Packing, heads: usize, head_dim: usize) -> Vec<f32> {
    let h = heads * head_dim;
    let s = p.max_len;
    let tokens: usize = p.lens.iter().sum();
    let mut out = vec![0.0f32; tokens * h];
    for (b, (&len, &start)) in p.lens.iter().zip(p.starts).enumerate() {
        for t in 0..len {
            let row = &mut out[(start + t) * h..(start + t + 1) * h];
            for head in 0..heads {
                let at = ((b * heads + head) * s + t) * head_dim;
                for (d, v) in row[head * head_dim..(head + 1) * head_dim]
                    .iter_mut()
                    .zip(&ctx[at..at + head_dim])
                {
                    *d = *v;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (accurate to ~1e-9 on [-4, 4]).
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let want = if x.abs() > 4.0 {
                x.signum()
            } else {
                erf_reference(x)
            };
            worst = worst.max((erf(x as f32) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
    }

    #[test]
    fn heads_round_trip() {
        let (heads, hd) = (2, 3);
        let lens = [2, 1];
        let starts = [0, 2];
        let p = Packing {
            lens: &lens,
            starts: &starts,
            max_len: 2,
        };
        let qkv: Vec<f32> = (0..3 * 18).map(|v| v as f32).collect();
        let [q, _, v] = split_heads(&qkv, &[0.0; 18], &p, heads, hd);
        assert_eq!(&q[..3], &[0.0, 1.0, 2.0]);
        assert_eq!(&q[3..6], &[18.0, 19.0, 20.0]); // token 1, head 0
        assert_eq!(merge_heads(&v, &p, heads, hd)[..6], qkv[12..18]);
        assert_eq!(
            merge_heads(&v, &p, heads, hd)[12..18],
            qkv[2 * 18 + 12..2 * 18 + 18]
        );
    }
}
