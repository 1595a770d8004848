//! Host kernels for the CPU path: the element-wise work between Burn's
//! matmuls, fused into one pass each over buffers that Burn's `flex` backend
//! hands over without copying (bias + GELU; bias + residual + LayerNorm;
//! attention in [`crate::attention`]).
//!
//! The CPU path keeps hidden states *packed*: the real tokens of every input
//! of a batch, one after the other, with no padding, so the matmuls (nearly
//! all of the work) never compute a padding row, and attention runs over each
//! input's own tokens.

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
}
