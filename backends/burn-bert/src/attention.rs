//! Self-attention of the CPU path, on the host. Each input's heads attend over that
//! input's own tokens, read straight from the packed q/k/v projection
//! (`[tokens, 3 * hidden]`, real tokens only), and write the packed context rows
//! (`[tokens, hidden]`). So there is no padded `[batch, heads, max_len, max_len]`
//! score tensor, no mask and no copy into and out of the head-major layout, and the
//! softmax uses the SIMD exponential of gllm-kernels. The (input, head) pairs go to
//! the thread pool, so a single query still uses every core.
//!
//! Arithmetic: `softmax(q·kᵀ / √d) · v` in f32 with the bias added to q, k and v as
//! they are gathered; the softmax subtracts each row's maximum. Both products run in
//! register tiles (two rows by 32 columns), not through memory one position at a
//! time.

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
///
/// Two small products, each through [`matmul_rows`]: the scores `q · kᵀ` (`[len, d]`
/// by `[d, keys]`, keys padded to a multiple of eight) and, after each row's softmax,
/// the context `p · v` (`[len, keys]` by `[keys, d8]`, d padded likewise). The padded
/// keys' scores are exact zeros (zero columns of kᵀ), left out of the softmax, and
/// meet zero rows of v, so they add nothing.
fn one_head(rows: &[f32], bias: &[f32], head: usize, h: usize, d: usize, scale: f32) -> Vec<f32> {
    let len = rows.len() / (3 * h);
    let o = head * d;
    let (keys, d8) = (len.next_multiple_of(LANES), d.next_multiple_of(LANES));
    // q scaled, [len, d]; k transposed, [d, keys]; v, [keys, d8]; padding is zero.
    let mut q = vec![0f32; len * d];
    let mut kt = vec![0f32; d * keys];
    let mut v = vec![0f32; keys * d8];
    let (bq, bk, bv) = (
        &bias[o..][..d],
        &bias[h + o..][..d],
        &bias[2 * h + o..][..d],
    );
    for (t, ((row, qt), vt)) in rows
        .chunks_exact(3 * h)
        .zip(q.chunks_exact_mut(d))
        .zip(v.chunks_exact_mut(d8))
        .enumerate()
    {
        for ((dst, x), b) in qt.iter_mut().zip(&row[o..][..d]).zip(bq) {
            *dst = (x + b) * scale;
        }
        for ((dst, x), b) in vt.iter_mut().zip(&row[2 * h + o..][..d]).zip(bv) {
            *dst = x + b;
        }
        for ((dst, x), b) in kt[t..]
            .iter_mut()
            .step_by(keys)
            .zip(&row[h + o..][..d])
            .zip(bk)
        {
            *dst = x + b;
        }
    }
    let mut p = vec![0f32; len * keys];
    matmul_rows(&q, len, d, &kt, keys, &mut p);
    // Softmax over each row's real keys, in place.
    for row in p.chunks_exact_mut(keys) {
        let s = &mut row[..len];
        let m = exp::row_max(s);
        let inv = 1.0 / exp::exp_sub_sum(s, m);
        for w in s.iter_mut() {
            *w *= inv;
        }
    }
    let mut ctx = vec![0f32; len * d8];
    matmul_rows(&p, len, keys, &v, d8, &mut ctx);
    if d8 == d {
        return ctx;
    }
    ctx.chunks_exact(d8)
        .flat_map(|r| r[..d].iter().copied())
        .collect()
}

/// Lanes of one accumulator (an AVX2 register of f32).
const LANES: usize = 8;

/// `out[r, j] = Σ_i a[r, i] · b[i, j]`: `a` row-major `[m, k]`, `b` row-major
/// `[k, n]` with `n` a multiple of [`LANES`], `out` `[m, n]`. Tiles of two rows by
/// four blocks of eight columns keep eight accumulators in registers; every output
/// sums over `i` in order, so its bits do not depend on the tile it falls in.
fn matmul_rows(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, out: &mut [f32]) {
    debug_assert!(n.is_multiple_of(LANES) && a.len() == m * k && b.len() == k * n);
    let mut r = 0;
    while r + 2 <= m {
        tile_columns::<2>(a, r, k, b, n, out);
        r += 2;
    }
    if r < m {
        tile_columns::<1>(a, r, k, b, n, out);
    }
}

#[inline(always)]
fn tile_columns<const R: usize>(
    a: &[f32],
    r0: usize,
    k: usize,
    b: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let mut j = 0;
    while j + 4 * LANES <= n {
        tile::<R, 4>(a, r0, k, b, n, j, out);
        j += 4 * LANES;
    }
    while j < n {
        tile::<R, 1>(a, r0, k, b, n, j, out);
        j += LANES;
    }
}

/// Rows `r0..r0 + R` by columns `j0..j0 + C * LANES`.
// Register arrays indexed by tile row, column block and lane on purpose.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
fn tile<const R: usize, const C: usize>(
    a: &[f32],
    r0: usize,
    k: usize,
    b: &[f32],
    n: usize,
    j0: usize,
    out: &mut [f32],
) {
    let mut acc = [[[0f32; LANES]; C]; R];
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a[(r0 + r) * k..][..k]);
    for i in 0..k {
        let bi = &b[i * n + j0..][..C * LANES];
        for r in 0..R {
            let x = rows[r][i];
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = x.mul_add(bi[c * LANES + l], acc[r][c][l]);
                }
            }
        }
    }
    for r in 0..R {
        let o = &mut out[(r0 + r) * n + j0..][..C * LANES];
        for c in 0..C {
            o[c * LANES..][..LANES].copy_from_slice(&acc[r][c]);
        }
    }
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
        // Head widths that are and are not multiples of the kernel's eight lanes, and
        // inputs of one token, of fewer and of more keys than one tile's 32 columns.
        for (heads, d) in [(3, 8), (2, 12), (2, 32)] {
            let h = heads * d;
            let lens = [5, 1, 17, 45];
            let starts = [0, 5, 6, 23];
            let tokens = 68;
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
                        "d {d}, input {b}, value {i}: {g} vs {w}"
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
}
