//! CPU kernels for half-precision weights (bf16 / f16) times f32 activations.
//!
//! Weights stay in their stored 16-bit form (half the memory traffic of f32) and are
//! widened to f32 in registers; products are accumulated in f32. Widening bf16/f16 to
//! f32 is exact, so this computes the same function as an f32 model built from the
//! same stored weights (up to summation order), which is what the references use.
//!
//! The SIMD path is chosen at compile time (`target_feature` avx2 + fma + f16c, i.e.
//! x86-64-v3 as set in `.cargo/config.toml`); other targets use the scalar path.

use rayon::prelude::*;

/// Which 16-bit float a half matrix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl HalfKind {
    /// One value as f32.
    #[inline]
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            HalfKind::Bf16 => half::bf16::from_bits(bits).to_f32(),
            HalfKind::F16 => half::f16::from_bits(bits).to_f32(),
        }
    }

    /// Rounds an f32 to this format.
    #[inline]
    pub fn from_f32(self, v: f32) -> u16 {
        match self {
            HalfKind::Bf16 => half::bf16::from_f32(v).to_bits(),
            HalfKind::F16 => half::f16::from_f32(v).to_bits(),
        }
    }
}

/// Weight rows handled together by one micro-kernel call.
const ROWS: usize = 4;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `out_t[j * m + i] = sum_k x[i * k + kk] * w[j * k + kk]` for a row-major `x` [m, k] and
/// a row-major weight `w` [n, k]; `out_t` is the transposed product [n, m].
///
/// Parallel over weight rows, so each weight byte is read once per call whatever `m` is.
pub fn matmul_t_half(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u16],
    n: usize,
    kind: HalfKind,
    out_t: &mut [f32],
) {
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(w.len(), n * k);
    debug_assert_eq!(out_t.len(), n * m);
    if m == 0 || n == 0 {
        return;
    }
    out_t
        .par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let j0 = task * ROWS_PER_TASK;
            let rows = out.len() / m;
            let mut j = 0;
            while j + ROWS <= rows {
                let base = (j0 + j) * k;
                let ws = [
                    &w[base..base + k],
                    &w[base + k..base + 2 * k],
                    &w[base + 2 * k..base + 3 * k],
                    &w[base + 3 * k..base + 4 * k],
                ];
                for i in 0..m {
                    let xi = &x[i * k..(i + 1) * k];
                    let d = dot4(xi, ws, kind);
                    for (r, v) in d.iter().enumerate() {
                        out[(j + r) * m + i] = *v;
                    }
                }
                j += ROWS;
            }
            while j < rows {
                let base = (j0 + j) * k;
                let wr = &w[base..base + k];
                for i in 0..m {
                    let xi = &x[i * k..(i + 1) * k];
                    out[j * m + i] = dot1(xi, wr, kind);
                }
                j += 1;
            }
        });
}

/// Widens rows `ids` of a [rows, k] half matrix into `out` ([ids.len(), k]).
pub fn gather_rows_half(w: &[u16], k: usize, ids: &[u32], kind: HalfKind, out: &mut [f32]) {
    for (dst, &id) in out.chunks_exact_mut(k).zip(ids) {
        let src = &w[id as usize * k..(id as usize + 1) * k];
        for (d, s) in dst.iter_mut().zip(src) {
            *d = kind.to_f32(*s);
        }
    }
}

fn dot1(x: &[f32], w: &[u16], kind: HalfKind) -> f32 {
    x.iter().zip(w).map(|(a, b)| a * kind.to_f32(*b)).sum()
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
fn dot4(x: &[f32], w: [&[u16]; 4], kind: HalfKind) -> [f32; 4] {
    // SAFETY: the target features are enabled at compile time, and every load below reads
    // 8 values at an index `c + 8 <= k`, in bounds of `x` (len k) and of each `w[r]` (len k).
    unsafe {
        match kind {
            HalfKind::Bf16 => avx::dot4::<true>(x, w),
            HalfKind::F16 => avx::dot4::<false>(x, w),
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
fn dot4(x: &[f32], w: [&[u16]; 4], kind: HalfKind) -> [f32; 4] {
    [
        dot1(x, w[0], kind),
        dot1(x, w[1], kind),
        dot1(x, w[2], kind),
        dot1(x, w[3], kind),
    ]
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod avx {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load8<const BF16: bool>(p: *const u16) -> __m256 {
        unsafe {
            let raw = _mm_loadu_si128(p as *const __m128i);
            if BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
            } else {
                _mm256_cvtph_ps(raw)
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps::<1>(v);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    /// Four dot products of `x` with four weight rows of the same length.
    #[inline(always)]
    pub(super) unsafe fn dot4<const BF16: bool>(x: &[f32], w: [&[u16]; 4]) -> [f32; 4] {
        let k = x.len();
        let k16 = k - k % 16;
        let k8 = k - k % 8;
        unsafe {
            let xp = x.as_ptr();
            let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
            let mut a0 = [_mm256_setzero_ps(); 4];
            let mut a1 = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < k16 {
                let x0 = _mm256_loadu_ps(xp.add(c));
                let x1 = _mm256_loadu_ps(xp.add(c + 8));
                for r in 0..4 {
                    a0[r] = _mm256_fmadd_ps(x0, load8::<BF16>(wp[r].add(c)), a0[r]);
                    a1[r] = _mm256_fmadd_ps(x1, load8::<BF16>(wp[r].add(c + 8)), a1[r]);
                }
                c += 16;
            }
            while c < k8 {
                let x0 = _mm256_loadu_ps(xp.add(c));
                for r in 0..4 {
                    a0[r] = _mm256_fmadd_ps(x0, load8::<BF16>(wp[r].add(c)), a0[r]);
                }
                c += 8;
            }
            let mut out = [0f32; 4];
            for r in 0..4 {
                out[r] = hsum(_mm256_add_ps(a0[r], a1[r]));
            }
            let kind = if BF16 {
                super::HalfKind::Bf16
            } else {
                super::HalfKind::F16
            };
            for (r, o) in out.iter_mut().enumerate() {
                for cc in k8..k {
                    *o += x[cc] * kind.to_f32(w[r][cc]);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_matmul_matches_scalar() {
        let (m, k, n) = (3, 37, 70);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        for kind in [HalfKind::Bf16, HalfKind::F16] {
            let w: Vec<u16> = (0..n * k)
                .map(|i| kind.from_f32(((i * 11 % 17) as f32 - 8.0) / 9.0))
                .collect();
            let mut out_t = vec![0f32; n * m];
            matmul_t_half(&x, m, k, &w, n, kind, &mut out_t);
            for j in 0..n {
                for i in 0..m {
                    let want: f32 = (0..k)
                        .map(|c| x[i * k + c] * kind.to_f32(w[j * k + c]))
                        .sum();
                    assert!((out_t[j * m + i] - want).abs() < 1e-4, "{kind:?} {i} {j}");
                }
            }
        }
    }
}
