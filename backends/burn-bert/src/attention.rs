//! Self-attention of the CPU path, on the host. Each input's heads attend over that
//! input's own tokens, read straight from the packed q/k/v projection
//! (`[tokens, 3 * hidden]`, real tokens only), and write the packed context rows
//! (`[tokens, hidden]`). So there is no padded `[batch, heads, max_len, max_len]`
//! score tensor, no mask and no copy into and out of the head-major layout, and the
//! softmax uses the SIMD exponential of gllm-kernels. The (input, head) pairs go to
//! the thread pool, so a single query still uses every core.
//!
//! Arithmetic: `softmax(q·kᵀ / √d) · v` in f32 with the bias added to q, k and v as
//! they are gathered; the softmax subtracts each row's maximum.

use gllm_kernels::exp;
use rayon::prelude::*;

use crate::cpu::Packing;

/// Attention of a packed batch: `qkv` holds `[tokens, 3 * heads * head_dim]` rows
/// (query, key, value, bias not yet added; `bias` is `3 * heads * head_dim` long);
/// returns the context, `[tokens, heads * head_dim]`.
pub fn packed_attention(
    qkv: &[f32],
    bias: &[f32],
    p: &Packing,
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let h = heads * head_dim;
    let tokens: usize = p.lens.iter().sum();
    assert!(
        qkv.len() == tokens * 3 * h && bias.len() == 3 * h,
        "packed attention: shapes"
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let tasks: Vec<(usize, usize)> = (0..p.lens.len())
        .flat_map(|b| (0..heads).map(move |head| (b, head)))
        .collect();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(b, head)| {
            let rows = &qkv[p.starts[b] * 3 * h..(p.starts[b] + p.lens[b]) * 3 * h];
            one_head(rows, bias, head, h, head_dim, scale)
        })
        .collect();
    let mut out = vec![0f32; tokens * h];
    for (&(b, head), ctx) in tasks.iter().zip(&parts) {
        for (t, row) in ctx.chunks_exact(head_dim).enumerate() {
            out[(p.starts[b] + t) * h + head * head_dim..][..head_dim].copy_from_slice(row);
        }
    }
    out
}

/// One head of one input: `rows` are that input's `[len, 3 * h]` projection rows;
/// returns its context, `[len, d]`.
fn one_head(rows: &[f32], bias: &[f32], head: usize, h: usize, d: usize, scale: f32) -> Vec<f32> {
    let len = rows.len() / (3 * h);
    let o = head * d;
    // q scaled, [len, d]; k transposed, [d, len], so the scores of a query vectorize
    // over keys; v, [len, d].
    let mut q = vec![0f32; len * d];
    let mut kt = vec![0f32; d * len];
    let mut v = vec![0f32; len * d];
    for (t, row) in rows.chunks_exact(3 * h).enumerate() {
        for i in 0..d {
            q[t * d + i] = (row[o + i] + bias[o + i]) * scale;
            kt[i * len + t] = row[h + o + i] + bias[h + o + i];
            v[t * d + i] = row[2 * h + o + i] + bias[2 * h + o + i];
        }
    }
    let mut ctx = vec![0f32; len * d];
    let mut s = vec![0f32; len];
    for (qt, c) in q.chunks_exact(d).zip(ctx.chunks_exact_mut(d)) {
        s.fill(0.0);
        for (qv, krow) in qt.iter().zip(kt.chunks_exact(len)) {
            for (x, k) in s.iter_mut().zip(krow) {
                *x = qv.mul_add(*k, *x);
            }
        }
        let m = exp::row_max(&s);
        let inv = 1.0 / exp::exp_sub_sum(&mut s, m);
        for (w, vrow) in s.iter().zip(v.chunks_exact(d)) {
            let w = w * inv;
            for (x, vv) in c.iter_mut().zip(vrow) {
                *x = w.mul_add(*vv, *x);
            }
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formula in f64 over one input's rows.
    fn reference(rows: &[f32], bias: &[f32], heads: usize, d: usize) -> Vec<f64> {
        let h = heads * d;
        let len = rows.len() / (3 * h);
        let at = |t: usize, part: usize, head: usize, i: usize| {
            let c = part * h + head * d + i;
            rows[t * 3 * h + c] as f64 + bias[c] as f64
        };
        let mut out = vec![0f64; len * h];
        for head in 0..heads {
            for t in 0..len {
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|i| at(t, 0, head, i) * at(j, 1, head, i))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    out[t * h + head * d + i] =
                        (0..len).map(|j| e[j] / z * at(j, 2, head, i)).sum::<f64>();
                }
            }
        }
        out
    }

    #[test]
    fn each_input_attends_over_its_own_tokens_only() {
        let (heads, d) = (3, 8);
        let h = heads * d;
        let lens = [5, 1, 17];
        let starts = [0, 5, 6];
        let tokens = 23;
        // Deterministic values in [-2, 2], large enough for a peaked softmax.
        let qkv: Vec<f32> = (0..tokens * 3 * h)
            .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
            .collect();
        let bias: Vec<f32> = (0..3 * h).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let p = Packing {
            lens: &lens,
            starts: &starts,
        };
        let got = packed_attention(&qkv, &bias, &p, heads, d);
        assert_eq!(got.len(), tokens * h);
        for (b, (&len, &start)) in lens.iter().zip(&starts).enumerate() {
            let want = reference(&qkv[start * 3 * h..(start + len) * 3 * h], &bias, heads, d);
            for (i, (g, w)) in got[start * h..(start + len) * h]
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "input {b}, value {i}: {g} vs {w}"
                );
            }
        }
        // A one-token input's context is its own value row (softmax of one score is 1).
        for i in 0..h {
            let want = qkv[5 * 3 * h + 2 * h + i] + bias[2 * h + i];
            assert!((got[5 * h + i] - want).abs() < 1e-6);
        }
    }
}
