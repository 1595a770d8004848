//! Attention on the CPU without tensor plumbing: RoPE applied in place to the
//! projection outputs ([positions, heads, head_dim], as the fused q/k/v matmul leaves
//! them), keys and values appended to a position-major cache, and causal grouped-query
//! attention computed per (position, head) in parallel, written straight into the
//! [positions, heads · head_dim] layout the output projection takes.
//!
//! Decode attends one query over the cache: this path does it with no transposes, no
//! mask tensor and no per-call thread-pool queries, which is most of what a small
//! model's decode step spends outside the matmuls. The arithmetic is transformers':
//! scores `q·k / √d` in f32, softmax with the maximum subtracted, then the weighted
//! sum of values.

use rayon::prelude::*;

use crate::config::RopeStyle;

/// Rotates each head of `x` ([n, heads, d]) by the angles of positions `0..n`, whose
/// cosines and sines are `cos`, `sin` ([n, d / 2]).
pub fn rope_in_place(
    x: &mut [f32],
    heads: usize,
    d: usize,
    cos: &[f32],
    sin: &[f32],
    style: RopeStyle,
) {
    let half = d / 2;
    for (p, row) in x.chunks_exact_mut(heads * d).enumerate() {
        let (c, s) = (
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
        );
        for h in row.chunks_exact_mut(d) {
            match style {
                RopeStyle::Halved => {
                    let (a, b) = h.split_at_mut(half);
                    for j in 0..half {
                        let (x0, x1) = (a[j], b[j]);
                        a[j] = x0 * c[j] - x1 * s[j];
                        b[j] = x1 * c[j] + x0 * s[j];
                    }
                }
                RopeStyle::Interleaved => {
                    for (j, pair) in h.chunks_exact_mut(2).enumerate() {
                        let (x0, x1) = (pair[0], pair[1]);
                        pair[0] = x0 * c[j] - x1 * s[j];
                        pair[1] = x1 * c[j] + x0 * s[j];
                    }
                }
            }
        }
    }
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Causal attention of `n` new positions (`q`: [n, heads, d]) that sit at
/// `offset..offset + n`, over a cache holding positions `0..offset + n` (`k`, `v`:
/// [positions, kv_heads, d], position-major). Writes `out`: [n, heads · d].
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    offset: usize,
    shape: AttentionShape,
    out: &mut [f32],
) {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: d,
    } = shape;
    let group = heads / kv_heads;
    let kv_stride = kv_heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    // One task per (position, KV head): the `group` query heads that share the KV
    // head are scored together, so each cached key and value is read once per group,
    // not once per query head. Enough tasks per hand-off to pay for it.
    let min_len = (8192 / ((offset + 1) * group).max(d)).max(1);
    out.par_chunks_mut(group * d)
        .with_min_len(min_len)
        .enumerate()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, (task, o)| {
            let (i, kh) = (task / kv_heads, task % kv_heads);
            let t = offset + i + 1;
            let qs = &q[(i * heads + kh * group) * d..][..group * d];
            scores.clear();
            scores.resize(group * t, 0.0);
            for p in 0..t {
                let kp = &k[p * kv_stride + kh * d..][..d];
                for (j, qv) in qs.chunks_exact(d).enumerate() {
                    scores[j * t + p] = dot(qv, kp) * scale;
                }
            }
            let mut sums = [0f32; 64];
            let sums = &mut sums[..group.min(64)];
            for (j, row) in scores.chunks_exact_mut(t).enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                if let Some(slot) = sums.get_mut(j) {
                    *slot = sum;
                } else {
                    // More than 64 query heads per KV head: normalize the weights now.
                    row.iter_mut().for_each(|s| *s /= sum);
                }
            }
            o.fill(0.0);
            for p in 0..t {
                let vp = &v[p * kv_stride + kh * d..][..d];
                for (j, oj) in o.chunks_exact_mut(d).enumerate() {
                    let s = scores[j * t + p];
                    for (a, b) in oj.iter_mut().zip(vp) {
                        *a += s * b;
                    }
                }
            }
            for (j, oj) in o.chunks_exact_mut(d).enumerate() {
                if let Some(sum) = sums.get(j) {
                    let inv = 1.0 / sum;
                    oj.iter_mut().for_each(|a| *a *= inv);
                }
            }
        });
}

/// A dot product in eight independent lanes (vectorizes; no serial dependency).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention written out the slow way: every score, a full softmax, every sum.
    fn naive(q: &[f32], k: &[f32], v: &[f32], offset: usize, s: AttentionShape) -> Vec<f32> {
        let (n, d) = (q.len() / (s.heads * s.head_dim), s.head_dim);
        let mut out = vec![0f32; n * s.heads * d];
        for i in 0..n {
            for h in 0..s.heads {
                let kh = h / (s.heads / s.kv_heads);
                let t = offset + i + 1;
                let qv = &q[(i * s.heads + h) * d..][..d];
                let sc: Vec<f64> = (0..t)
                    .map(|p| {
                        let kp = &k[(p * s.kv_heads + kh) * d..][..d];
                        qv.iter().zip(kp).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for j in 0..d {
                    let val: f64 = (0..t)
                        .map(|p| e[p] * v[(p * s.kv_heads + kh) * d + j] as f64)
                        .sum();
                    out[(i * s.heads + h) * d + j] = (val / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_written_out_attention() {
        let s = AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim: 12,
        };
        for (offset, n) in [(0, 5), (7, 1), (3, 4)] {
            let t = offset + n;
            let val = |i: usize, m: usize| ((i * m % 97) as f32 - 48.0) / 31.0;
            let q: Vec<f32> = (0..n * s.heads * s.head_dim).map(|i| val(i, 13)).collect();
            let k: Vec<f32> = (0..t * s.kv_heads * s.head_dim)
                .map(|i| val(i, 7))
                .collect();
            let v: Vec<f32> = (0..t * s.kv_heads * s.head_dim)
                .map(|i| val(i, 11))
                .collect();
            let mut out = vec![0f32; q.len()];
            attend(&q, &k, &v, offset, s, &mut out);
            let want = naive(&q, &k, &v, offset, s);
            for (j, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "offset {offset} n {n} [{j}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rope_styles_rotate_their_pairs() {
        // One position, one head of 4: angle a for pair 0, b for pair 1.
        let (a, b) = (0.3f32, 1.1f32);
        let (cos, sin) = ([a.cos(), b.cos()], [a.sin(), b.sin()]);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut halved = x;
        rope_in_place(&mut halved, 1, 4, &cos, &sin, RopeStyle::Halved);
        // Pairs (0, 2) and (1, 3).
        let want = [
            1.0 * a.cos() - 3.0 * a.sin(),
            2.0 * b.cos() - 4.0 * b.sin(),
            3.0 * a.cos() + 1.0 * a.sin(),
            4.0 * b.cos() + 2.0 * b.sin(),
        ];
        assert_eq!(halved, want);
        let mut inter = x;
        rope_in_place(&mut inter, 1, 4, &cos, &sin, RopeStyle::Interleaved);
        // Pairs (0, 1) and (2, 3).
        let want = [
            1.0 * a.cos() - 2.0 * a.sin(),
            2.0 * a.cos() + 1.0 * a.sin(),
            3.0 * b.cos() - 4.0 * b.sin(),
            4.0 * b.cos() + 3.0 * b.sin(),
        ];
        assert_eq!(inter, want);
    }
}
