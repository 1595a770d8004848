//! The softmax's exponential: `exp(x)` for scores minus their maximum, as a polynomial
//! evaluated in eight SIMD lanes where the build has AVX2 and FMA and in scalar code
//! otherwise, giving the same bits either way.

/// The largest of `row` (`-inf` when empty).
#[inline]
pub(super) fn row_max(row: &[f32]) -> f32 {
    let mut chunks = row.chunks_exact(8);
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in &mut chunks {
        for (m, x) in lanes.iter_mut().zip(c) {
            *m = m.max(*x);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, b| a.max(*b))
}

/// Replaces each score `x` of `row` by `exp(x - m)` and returns their sum. The
/// exponential is [`exp_poly`], in eight lanes where the build has AVX2 and FMA, so
/// every lane gives the same bits as the scalar tail.
#[inline]
pub(super) fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
    let (mut sum, done) = exp_sub_sum_lanes(row, m);
    for x in &mut row[done..] {
        *x = exp_poly(*x - m);
        sum += *x;
    }
    sum
}

/// The whole eight-lane chunks of [`exp_sub_sum`]: their sum and how many values
/// they covered.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
fn exp_sub_sum_lanes(row: &mut [f32], m: f32) -> (f32, usize) {
    use std::arch::x86_64::*;
    let mut done = 0;
    // SAFETY: the build enables AVX2 and FMA; the loop stays within `row`.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mv = _mm256_set1_ps(m);
        while done + 8 <= row.len() {
            let p = row.as_mut_ptr().add(done);
            let e = exp_poly_avx2(_mm256_sub_ps(_mm256_loadu_ps(p), mv));
            _mm256_storeu_ps(p, e);
            acc = _mm256_add_ps(acc, e);
            done += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        (lanes.iter().sum(), done)
    }
}

/// Without AVX2 and FMA every value takes the scalar path.
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
#[inline]
fn exp_sub_sum_lanes(_row: &mut [f32], _m: f32) -> (f32, usize) {
    (0.0, 0)
}

/// Below this, `exp` is taken as 0 (`exp(-87.3)` is about `1e-38`, the smallest
/// normal f32).
const EXP_MIN: f32 = -87.3;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' single-precision polynomial for `exp(r)`, `|r| ≤ ln 2 / 2` (degree 5 after
/// `1 + r`; about one ulp).
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` for `x ≤ 0` (scores minus their maximum): `2^n · e^r` with
/// `x = n ln 2 + r`, 0 below [`EXP_MIN`] (and for `-inf`).
#[inline]
pub(super) fn exp_poly(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_MIN {
        return 0.0;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    f32::from_bits((y.to_bits() as i32 + ((n as i32) << 23)) as u32)
}

/// [`exp_poly`] in eight lanes.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
unsafe fn exp_poly_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: register arithmetic only; the caller's build enables AVX2 and FMA.
    unsafe {
        let keep = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_MIN), _CMP_GE_OQ);
        let nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
        let xc = _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN));
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
        let y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), e));
        _mm256_or_ps(_mm256_and_ps(y, keep), _mm256_and_ps(x, nan))
    }
}
