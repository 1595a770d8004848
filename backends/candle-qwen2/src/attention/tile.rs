//! The two products of one attention tile, register-blocked: the scores of a group's
//! query heads against up to [`super::TILE`] cached keys, and the probability-weighted
//! sum of the tile's values added to the heads' outputs.
//!
//! Scores take four query heads against two key blocks (sixteen keys) per pass, so
//! each broadcast query value feeds two FMAs and each key row four; value sums take
//! two heads against 32 columns, so each value row loaded feeds two heads. Both fit the
//! sixteen AVX registers with no spills. Builds without AVX2 and FMA run the same
//! sums in scalar code.

use super::KEY_BLOCK;

/// Query heads per pass of [`scores`].
const SCORE_HEADS: usize = 4;

/// `out[j * stride + 8 b + l] = q_j · key l of block b` for the `q.len() / d` query
/// heads `q` ([heads, d]) and the `blocks` key blocks starting at `kb` (block `b` at
/// `kb[b * block_stride..][..d * 8]`, [d, 8] each).
pub(super) fn scores(
    q: &[f32],
    d: usize,
    kb: &[f32],
    blocks: usize,
    block_stride: usize,
    out: &mut [f32],
    stride: usize,
) {
    let heads = q.len() / d;
    if heads == 0 || blocks == 0 {
        return;
    }
    assert!(
        q.len() == heads * d
            && (blocks - 1) * block_stride + d * KEY_BLOCK <= kb.len()
            && (heads - 1) * stride + blocks * KEY_BLOCK <= out.len(),
        "attention tile scores: shapes"
    );
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        let mut j0 = 0;
        while j0 < heads {
            let h = SCORE_HEADS.min(heads - j0);
            let mut b = 0;
            while b < blocks {
                let two = blocks - b >= 2;
                // SAFETY: the build enables AVX2 and FMA; rows j0..j0 + h of q, blocks
                // b..b + (1 or 2) of kb and their output columns are in bounds
                // (asserted above).
                unsafe {
                    let (qp, kp) = (q.as_ptr().add(j0 * d), kb.as_ptr().add(b * block_stride));
                    let op = out.as_mut_ptr().add(j0 * stride + b * KEY_BLOCK);
                    match (h, two) {
                        (4, true) => scores_avx2::<4, 2>(qp, d, kp, block_stride, op, stride),
                        (3, true) => scores_avx2::<3, 2>(qp, d, kp, block_stride, op, stride),
                        (2, true) => scores_avx2::<2, 2>(qp, d, kp, block_stride, op, stride),
                        (1, true) => scores_avx2::<1, 2>(qp, d, kp, block_stride, op, stride),
                        (4, false) => scores_avx2::<4, 1>(qp, d, kp, block_stride, op, stride),
                        (3, false) => scores_avx2::<3, 1>(qp, d, kp, block_stride, op, stride),
                        (2, false) => scores_avx2::<2, 1>(qp, d, kp, block_stride, op, stride),
                        _ => scores_avx2::<1, 1>(qp, d, kp, block_stride, op, stride),
                    }
                }
                b += if two { 2 } else { 1 };
            }
            j0 += h;
        }
        return;
    }
    #[allow(unreachable_code)]
    for j in 0..heads {
        let qj = &q[j * d..][..d];
        for b in 0..blocks {
            let o = &mut out[j * stride + b * KEY_BLOCK..][..KEY_BLOCK];
            o.fill(0.0);
            let kc = &kb[b * block_stride..][..d * KEY_BLOCK];
            for (qv, row) in qj.iter().zip(kc.chunks_exact(KEY_BLOCK)) {
                for (x, kv) in o.iter_mut().zip(row) {
                    *x = qv.mul_add(*kv, *x);
                }
            }
        }
    }
}

/// [`scores`] for `H` heads against `B` key blocks, the accumulators in registers.
///
/// # Safety
/// The build must enable AVX2 and FMA; `q` holds `H` rows of `d`, `k` `B` blocks of
/// `d * 8` at `block_stride`, and `out` `H` rows of `8 B` at `stride`.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
unsafe fn scores_avx2<const H: usize, const B: usize>(
    q: *const f32,
    d: usize,
    k: *const f32,
    block_stride: usize,
    out: *mut f32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); B]; H];
        for c in 0..d {
            let mut kc = [_mm256_setzero_ps(); B];
            for (b, r) in kc.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(k.add(b * block_stride + c * KEY_BLOCK));
            }
            for (j, row) in acc.iter_mut().enumerate() {
                let qv = _mm256_set1_ps(*q.add(j * d + c));
                for (a, kr) in row.iter_mut().zip(&kc) {
                    *a = _mm256_fmadd_ps(qv, *kr, *a);
                }
            }
        }
        for (j, row) in acc.iter().enumerate() {
            for (b, a) in row.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * stride + b * KEY_BLOCK), *a);
            }
        }
    }
}

/// `o_j += Σ_p w[j * w_stride + p] · v[p * v_stride..][..d]` for each head `j` of `o`
/// ([heads, d]) over the tile's first `len` positions.
pub(super) fn values(
    w: &[f32],
    w_stride: usize,
    len: usize,
    v: &[f32],
    v_stride: usize,
    o: &mut [f32],
    d: usize,
) {
    let heads = o.len() / d;
    if heads == 0 || len == 0 {
        return;
    }
    assert!(
        o.len() == heads * d
            && (heads - 1) * w_stride + len <= w.len()
            && (len - 1) * v_stride + d <= v.len(),
        "attention tile values: shapes"
    );
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if d.is_multiple_of(32) {
        let mut j0 = 0;
        while j0 < heads {
            let pair = heads - j0 >= 2;
            for c0 in (0..d).step_by(32) {
                // SAFETY: the build enables AVX2 and FMA; heads j0..j0 + (1 or 2),
                // positions 0..len and columns c0..c0 + 32 are in bounds (asserted).
                unsafe {
                    let wp = w.as_ptr().add(j0 * w_stride);
                    let vp = v.as_ptr().add(c0);
                    let op = o.as_mut_ptr().add(j0 * d + c0);
                    if pair {
                        values_avx2::<2>(wp, w_stride, len, vp, v_stride, op, d);
                    } else {
                        values_avx2::<1>(wp, w_stride, len, vp, v_stride, op, d);
                    }
                }
            }
            j0 += if pair { 2 } else { 1 };
        }
        return;
    }
    for (j, oj) in o.chunks_exact_mut(d).enumerate() {
        for (p, s) in w[j * w_stride..][..len].iter().enumerate() {
            for (a, b) in oj.iter_mut().zip(&v[p * v_stride..][..d]) {
                *a = s.mul_add(*b, *a);
            }
        }
    }
}

/// 32 columns of [`values`] for `H` heads, the accumulators in registers.
///
/// # Safety
/// The build must enable AVX2 and FMA; `w` holds `H` rows of `len` at `w_stride`, `v`
/// `len` rows of 32 at `v_stride`, and `o` `H` rows of 32 at `o_stride`.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
unsafe fn values_avx2<const H: usize>(
    w: *const f32,
    w_stride: usize,
    len: usize,
    v: *const f32,
    v_stride: usize,
    o: *mut f32,
    o_stride: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; H];
        for (j, row) in acc.iter_mut().enumerate() {
            for (i, a) in row.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(j * o_stride + 8 * i));
            }
        }
        for p in 0..len {
            let row = v.add(p * v_stride);
            let vv = [
                _mm256_loadu_ps(row),
                _mm256_loadu_ps(row.add(8)),
                _mm256_loadu_ps(row.add(16)),
                _mm256_loadu_ps(row.add(24)),
            ];
            for (j, accj) in acc.iter_mut().enumerate() {
                let s = _mm256_set1_ps(*w.add(j * w_stride + p));
                for (a, x) in accj.iter_mut().zip(&vv) {
                    *a = _mm256_fmadd_ps(s, *x, *a);
                }
            }
        }
        for (j, row) in acc.iter().enumerate() {
            for (i, a) in row.iter().enumerate() {
                _mm256_storeu_ps(o.add(j * o_stride + 8 * i), *a);
            }
        }
    }
}
