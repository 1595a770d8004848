//! Attention on the CPU without tensor plumbing: RoPE applied in place to the
//! projection outputs ([positions, heads, head_dim], as the fused q/k/v matmul leaves
//! them), keys appended to a cache of eight-position blocks ([`key_index`]: the scores of
//! eight positions are eight-lane FMAs) and values to a position-major one, and causal
//! grouped-query attention computed per (position, KV head) in parallel (the query heads
//! sharing a KV head read each cached row once), written straight into the
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

/// Positions per block of the key cache.
pub const KEY_BLOCK: usize = 8;

/// Where key element `c` of KV head `kh` at position `p` sits in the key cache: blocks
/// of [`KEY_BLOCK`] positions, [blocks, kv_heads, d, 8], so the scores of eight
/// positions against one query are eight-lane FMAs with no horizontal sums.
#[inline]
pub fn key_index(p: usize, kh: usize, c: usize, kv_heads: usize, d: usize) -> usize {
    ((p / KEY_BLOCK * kv_heads + kh) * d + c) * KEY_BLOCK + p % KEY_BLOCK
}

/// Values the key cache holds for `positions` positions (whole blocks).
pub fn key_cache_len(positions: usize, kv_heads: usize, d: usize) -> usize {
    positions.div_ceil(KEY_BLOCK) * KEY_BLOCK * kv_heads * d
}

/// Writes keys `k` ([n, kv_heads, d], position-major) of positions `from..from + n`
/// into the key cache `cache` (long enough).
pub fn store_keys(cache: &mut [f32], from: usize, k: &[f32], kv_heads: usize, d: usize) {
    for (i, row) in k.chunks_exact(kv_heads * d).enumerate() {
        for (kh, head) in row.chunks_exact(d).enumerate() {
            for (c, v) in head.iter().enumerate() {
                cache[key_index(from + i, kh, c, kv_heads, d)] = *v;
            }
        }
    }
}

/// Causal attention of `n` new positions (`q`: [n, heads, d]) that sit at
/// `offset..offset + n`, over a cache holding positions `0..offset + n` (`k`: the key
/// cache, see [`key_index`]; `v`: [positions, kv_heads, d], position-major). Writes
/// `out`: [n, heads · d].
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
            // Eight positions at a time: one key block against every query head.
            for blk in 0..t.div_ceil(KEY_BLOCK) {
                let kb = &k[(blk * kv_heads + kh) * d * KEY_BLOCK..][..d * KEY_BLOCK];
                for (j0, heads8) in qs.chunks(8 * d).enumerate() {
                    let mut block = [[0f32; KEY_BLOCK]; 8];
                    block_scores(heads8, d, kb, &mut block);
                    for (jj, b) in block.iter().enumerate().take(heads8.len() / d) {
                        let row = (8 * j0 + jj) * t;
                        for (l, v) in b.iter().enumerate() {
                            let p = blk * KEY_BLOCK + l;
                            if p < t {
                                scores[row + p] = v * scale;
                            }
                        }
                    }
                }
            }
            // Per query head: softmax with the maximum subtracted, then the weighted
            // sum of values, normalized.
            for (oj, row) in o.chunks_exact_mut(d).zip(scores.chunks_exact_mut(t)) {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                weighted_sum(row, v, kv_stride, kh * d, oj);
                let inv = 1.0 / sum;
                oj.iter_mut().for_each(|a| *a *= inv);
            }
        });
}

/// The dot products of up to eight queries `qs` ([heads, d]) with the eight keys of
/// block `kb` ([d, 8]): `out[j][l]` for query `j`, key `l`. One load of each key row
/// serves every query.
#[inline]
fn block_scores(qs: &[f32], d: usize, kb: &[f32], out: &mut [[f32; KEY_BLOCK]; 8]) {
    let heads = qs.len() / d;
    assert!(
        heads <= 8 && kb.len() == d * KEY_BLOCK,
        "block_scores: shapes"
    );
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the build enables AVX2 and FMA; kb holds d rows of eight and qs
        // `heads` rows of d (asserted).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in 0..d {
                let kc = _mm256_loadu_ps(kb.as_ptr().add(c * KEY_BLOCK));
                for (j, a) in acc.iter_mut().enumerate().take(heads) {
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(*qs.get_unchecked(j * d + c)), kc, *a);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), a);
            }
        }
        return;
    }
    #[allow(unreachable_code)]
    for (j, o) in out.iter_mut().enumerate().take(heads) {
        *o = [0f32; KEY_BLOCK];
        for (qv, kc) in qs[j * d..(j + 1) * d]
            .iter()
            .zip(kb.chunks_exact(KEY_BLOCK))
        {
            for (x, kv) in o.iter_mut().zip(kc) {
                *x = qv.mul_add(*kv, *x);
            }
        }
    }
}

/// `out = Σ_p w[p] · v[p · stride + off ..][..out.len()]`: the softmax-weighted sum of
/// one head's cached values.
#[inline]
fn weighted_sum(w: &[f32], v: &[f32], stride: usize, off: usize, out: &mut [f32]) {
    let d = out.len();
    if let Some(last) = w.len().checked_sub(1) {
        assert!(last * stride + off + d <= v.len(), "value cache too short");
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if d.is_multiple_of(64) {
        for (h, part) in out.chunks_exact_mut(64).enumerate() {
            // SAFETY: the build enables AVX2 and FMA; every row read is in bounds (the
            // assertion above covers the last one).
            unsafe { weighted_sum_64(w, v.as_ptr().add(off + 64 * h), stride, part) };
        }
        return;
    }
    out.fill(0.0);
    for (p, s) in w.iter().enumerate() {
        let vp = &v[p * stride + off..][..d];
        for (a, b) in out.iter_mut().zip(vp) {
            *a = s.mul_add(*b, *a);
        }
    }
}

/// 64 columns of [`weighted_sum`] in eight AVX registers.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn weighted_sum_64(w: &[f32], v: *const f32, stride: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (p, s) in w.iter().enumerate() {
            let row = v.add(p * stride);
            let s = _mm256_set1_ps(*s);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(s, _mm256_loadu_ps(row.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), *a);
        }
    }
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
            let mut cache = vec![0f32; key_cache_len(t, s.kv_heads, s.head_dim)];
            store_keys(&mut cache, 0, &k, s.kv_heads, s.head_dim);
            let mut out = vec![0f32; q.len()];
            attend(&q, &cache, &v, offset, s, &mut out);
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
