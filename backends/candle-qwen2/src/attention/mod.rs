//! Attention on the CPU without tensor plumbing: RoPE applied in place to the
//! projection outputs ([positions, heads, head_dim], as the fused q/k/v matmul leaves
//! them), keys appended to a cache of sixteen-position blocks ([`key_index`]: the scores of
//! sixteen positions are lane-wise FMAs) and values to a position-major one, and causal
//! grouped-query attention computed per (position, KV head) in parallel (the query heads
//! sharing a KV head read each cached row once), written straight into the
//! [positions, heads · head_dim] layout the output projection takes.
//!
//! Decode attends one query over the cache: this path does it with no transposes, no
//! mask tensor and no per-call thread-pool queries, which is most of what a small
//! model's decode step spends outside the matmuls. The arithmetic is transformers'
//! up to rounding: scores `q·k / √d` in f32 (the scale folded into the query), softmax
//! with the running maximum subtracted (online, over tiles of 64 keys, as flash
//! attention does), then the weighted sum of values. The exponential is a polynomial
//! evaluated in SIMD lanes (about one ulp from `expf`).

use rayon::prelude::*;

use gllm_kernels::Isa;

use gllm_kernels::exp;

mod tile;

use gllm_arch::RopeStyle;

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

/// What the KV cache holds: f32 (exact), or f16 (half the memory and half the bytes
/// a decode step reads, as llama.cpp keeps it), widened to f32 as the kernels load it.
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    /// Whether the values are f16 bits (`half::f16`), else f32.
    const F16: bool;
    /// The value as f32.
    fn to_f32(self) -> f32;
    /// `v` rounded to this type.
    fn from_f32(v: f32) -> Self;
}

impl KvElem for f32 {
    const F16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl KvElem for half::f16 {
    const F16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
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

/// Positions per block of the key cache (one sixteen-lane register, or two of eight).
pub const KEY_BLOCK: usize = 16;

/// Where key element `c` of KV head `kh` at position `p` sits in the key cache: blocks
/// of [`KEY_BLOCK`] positions, [blocks, kv_heads, d, 16], so the scores of sixteen
/// positions against one query are lane-wise FMAs with no horizontal sums.
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
pub fn store_keys<T: KvElem>(cache: &mut [T], from: usize, k: &[f32], kv_heads: usize, d: usize) {
    for (i, row) in k.chunks_exact(kv_heads * d).enumerate() {
        for (kh, head) in row.chunks_exact(d).enumerate() {
            for (c, v) in head.iter().enumerate() {
                cache[key_index(from + i, kh, c, kv_heads, d)] = T::from_f32(*v);
            }
        }
    }
}

/// Key positions per step of the online softmax: four key blocks.
const TILE: usize = 4 * KEY_BLOCK;

/// Per-task buffers of [`attend`], reused across tasks.
#[derive(Default)]
struct Scratch {
    /// The group's queries, scaled by `1 / √d`.
    q: Vec<f32>,
    /// Scores, then probabilities, of one tile: [group, TILE].
    p: Vec<f32>,
    /// Running maximum score per query head.
    max: Vec<f32>,
    /// Running sum of `exp(score - max)` per query head.
    sum: Vec<f32>,
}

/// Causal attention of `n` new positions (`q`: [n, heads, d]) that sit at
/// `offset..offset + n`, over a cache holding positions `0..offset + n` (`k`: the key
/// cache, see [`key_index`]; `v`: [positions, kv_heads, d], position-major). Writes
/// `out`: [n, heads · d].
///
/// Keys are visited in tiles of 64 positions with an online softmax (the running
/// maximum and sum of each query head rescale its partial output when the maximum
/// grows), so a task's memory does not grow with the context and every score is read
/// from L1 right after it is computed.
pub fn attend<T: KvElem>(
    q: &[f32],
    k: &[T],
    v: &[T],
    offset: usize,
    shape: AttentionShape,
    out: &mut [f32],
) {
    attend_with(Isa::detect(), q, k, v, offset, shape, out)
}

/// [`attend`] with the kernels of `isa` (which the CPU must support).
pub fn attend_with<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[T],
    v: &[T],
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
    let n = q.len() / (heads * d).max(1);
    // One task per (position, KV head): the `group` query heads that share the KV
    // head are scored together, so each cached key and value is read once per group,
    // not once per query head. Enough tasks per hand-off to pay for it, counted by the
    // mean number of keys a task reads (causal: half the prompt on average) times the
    // query heads that score them. A decode step of Qwen3-0.6B (8 KV heads of 128) at
    // 150 cached positions has eight tasks of 300: split in two. It had run on one
    // thread (at 8192), and reading its 1.2 MB of keys and values from memory with
    // one core made attention 17% of the step; split, decode measured 15% faster.
    let mean_keys = offset + n.div_ceil(2);
    let min_len = (1024 / (mean_keys * group).max(d)).max(1);
    out.par_chunks_mut(group * d)
        .with_min_len(min_len)
        .enumerate()
        .for_each_init(Scratch::default, |s, (task, o)| {
            let (i, kh) = (task / kv_heads, task % kv_heads);
            let qs = &q[(i * heads + kh * group) * d..][..group * d];
            attend_group(isa, qs, k, v, offset + i + 1, kh, shape, o, s);
        });
}

/// Attention of the query heads `qs` ([group, d]) sharing KV head `kh` over cached
/// positions `0..t`, written to `o` ([group, d]).
#[allow(clippy::too_many_arguments)]
fn attend_group<T: KvElem>(
    isa: Isa,
    qs: &[f32],
    k: &[T],
    v: &[T],
    t: usize,
    kh: usize,
    shape: AttentionShape,
    o: &mut [f32],
    s: &mut Scratch,
) {
    let (kv_heads, d) = (shape.kv_heads, shape.head_dim);
    let group = qs.len() / d;
    let kv_stride = kv_heads * d;
    let block_stride = kv_heads * d * KEY_BLOCK;
    let scale = 1.0 / (d as f32).sqrt();
    s.q.clear();
    s.q.extend(qs.iter().map(|x| x * scale));
    s.p.resize(group * TILE, 0.0);
    s.max.clear();
    s.max.resize(group, f32::NEG_INFINITY);
    s.sum.clear();
    s.sum.resize(group, 0.0);
    o.fill(0.0);
    for p0 in (0..t).step_by(TILE) {
        let len = TILE.min(t - p0);
        let kb = &k[(p0 / KEY_BLOCK * kv_heads + kh) * d * KEY_BLOCK..];
        tile::scores(
            isa,
            &s.q,
            d,
            kb,
            len.div_ceil(KEY_BLOCK),
            block_stride,
            &mut s.p,
        );
        for (r, or) in o.chunks_exact_mut(d).enumerate() {
            let row = &mut s.p[r * TILE..][..len];
            let m = s.max[r].max(exp::row_max(row));
            // exp(-inf) = 0 on the first tile, where the output is still zero.
            let corr = exp::exp_poly(s.max[r] - m);
            s.max[r] = m;
            s.sum[r] = s.sum[r] * corr + exp::exp_sub_sum(row, m);
            if corr != 1.0 {
                or.iter_mut().for_each(|a| *a *= corr);
            }
        }
        let vt = &v[p0 * kv_stride + kh * d..];
        tile::values(isa, &s.p, TILE, len, vt, kv_stride, o, d);
    }
    for (or, sum) in o.chunks_exact_mut(d).zip(&s.sum) {
        let inv = 1.0 / sum;
        or.iter_mut().for_each(|a| *a *= inv);
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

    /// Attention over a cache of `T` holding keys `k` and values `v`, with every kernel
    /// level this CPU has (the scalar loops included): within 1e-5 of `want`.
    fn check_cache<T: KvElem>(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        offset: usize,
        s: AttentionShape,
        want: &[f32],
    ) {
        let t = k.len() / (s.kv_heads * s.head_dim);
        let mut cache = vec![T::default(); key_cache_len(t, s.kv_heads, s.head_dim)];
        store_keys(&mut cache, 0, k, s.kv_heads, s.head_dim);
        let v: Vec<T> = v.iter().map(|x| T::from_f32(*x)).collect();
        let mut out = vec![0f32; q.len()];
        let cache_type = if T::F16 { "f16" } else { "f32" };
        for isa in Isa::available() {
            attend_with(isa, q, &cache, &v, offset, s, &mut out);
            for (j, (a, b)) in out.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{cache_type} cache, {isa:?} {s:?} offset {offset} [{j}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matches_the_written_out_attention() {
        // An odd head width (scalar value sums), Qwen2-0.5B's groups of seven heads of
        // 64 (score passes of 4 + 3 heads, value pairs + one), and heads of 128.
        let shapes = [(6, 2, 12), (14, 2, 64), (8, 2, 128)].map(|(heads, kv_heads, head_dim)| {
            AttentionShape {
                heads,
                kv_heads,
                head_dim,
            }
        });
        // Past one tile of keys too (t = 64 + 1, 140), where the online softmax rescales;
        // t = 17: one whole key block and one position of the next.
        for (s, (offset, n)) in shapes
            .into_iter()
            .flat_map(|s| [(0, 5), (7, 1), (3, 4), (16, 1), (64, 1), (100, 40)].map(|c| (s, c)))
        {
            let t = offset + n;
            let val = |i: usize, m: usize| ((i * m % 97) as f32 - 48.0) / 31.0;
            let q: Vec<f32> = (0..n * s.heads * s.head_dim).map(|i| val(i, 13)).collect();
            let k: Vec<f32> = (0..t * s.kv_heads * s.head_dim)
                .map(|i| val(i, 7))
                .collect();
            let v: Vec<f32> = (0..t * s.kv_heads * s.head_dim)
                .map(|i| val(i, 11))
                .collect();
            let want = naive(&q, &k, &v, offset, s);
            check_cache::<f32>(&q, &k, &v, offset, s, &want);
            // An f16 cache: the attention of the keys and values rounded to f16, to
            // the same tolerance (the kernels widen them exactly).
            let round = |x: &[f32]| -> Vec<f32> {
                x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect()
            };
            let want16 = naive(&q, &round(&k), &round(&v), offset, s);
            check_cache::<half::f16>(&q, &k, &v, offset, s, &want16);
            let rounding = want16
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(rounding > 0.0, "the f16 case must round something");
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
