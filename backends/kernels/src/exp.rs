//! The exponential of attention's softmax (decoders and encoders) and of the MLP's SiLU: `exp(x)` for `x ≤ 0`
//! as a polynomial evaluated in eight SIMD lanes where the build has AVX2 and FMA and
//! in scalar code otherwise, giving the same bits either way (about one ulp from
//! `expf`).

use rayon::prelude::*;

/// The largest of `row` (`-inf` when empty).
#[inline]
pub fn row_max(row: &[f32]) -> f32 {
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
pub fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
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
/// Above this, `exp` is taken as infinite (`exp(88.3)` is about `2.1e38`, near the
/// largest f32).
const EXP_MAX: f32 = 88.3;
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

/// `exp(x)`: `2^n · e^r` with `x = n ln 2 + r`, 0 below [`EXP_MIN`] (and for `-inf`),
/// infinite above [`EXP_MAX`].
#[inline]
pub fn exp_poly(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_MIN {
        return 0.0;
    }
    if x > EXP_MAX {
        return f32::INFINITY;
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
        let big = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_MAX), _CMP_GT_OQ);
        let xc = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)),
            _mm256_set1_ps(EXP_MAX),
        );
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
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), big);
        _mm256_or_ps(_mm256_and_ps(y, keep), _mm256_and_ps(x, nan))
    }
}

/// SwiGLU's product, `out = silu(gate) · up` element by element, with
/// `silu(g) = g / (1 + exp(-g))` (candle's and PyTorch's formula), on the calling
/// thread.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "silu_mul: lengths"
    );
    let done = silu_mul_lanes(gate, up, out);
    for ((o, g), u) in out[done..].iter_mut().zip(&gate[done..]).zip(&up[done..]) {
        *o = g / (1.0 + exp_poly(-g)) * u;
    }
}

/// Values per task of [`swiglu`]: enough work to pay for handing it to a thread.
const SWIGLU_TASK: usize = 16 * 1024;

/// [`silu_mul`] of every row of a gate/up product `y` ([rows, 2 · width]: each row's
/// gate, then its up) into `out` ([rows, width]), whole rows per task on the thread
/// pool. Each value's bits are [`silu_mul`]'s, whatever the split.
pub fn swiglu(y: &[f32], width: usize, out: &mut [f32]) {
    let rows = out.len() / width.max(1);
    assert!(
        y.len() == 2 * out.len() && out.len() == rows * width,
        "swiglu: lengths"
    );
    if width == 0 {
        return;
    }
    let per_task = SWIGLU_TASK.div_ceil(width);
    out.par_chunks_mut(per_task * width)
        .zip(y.par_chunks(2 * per_task * width))
        .for_each(|(o, y)| {
            for (o, row) in o.chunks_exact_mut(width).zip(y.chunks_exact(2 * width)) {
                let (gate, up) = row.split_at(width);
                silu_mul(gate, up, o);
            }
        });
}

/// The whole eight-lane chunks of [`silu_mul`]; returns how many values they covered.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline]
fn silu_mul_lanes(g: &[f32], u: &[f32], o: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let mut done = 0;
    // SAFETY: the build enables AVX2 and FMA; the three slices have one length and
    // the loop stays within it.
    unsafe {
        let one = _mm256_set1_ps(1.0);
        let zero = _mm256_setzero_ps();
        while done + 8 <= o.len() {
            let gv = _mm256_loadu_ps(g.as_ptr().add(done));
            let e = exp_poly_avx2(_mm256_sub_ps(zero, gv));
            let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            let uv = _mm256_loadu_ps(u.as_ptr().add(done));
            _mm256_storeu_ps(o.as_mut_ptr().add(done), _mm256_mul_ps(s, uv));
            done += 8;
        }
    }
    done
}

/// Without AVX2 and FMA every value takes the scalar path.
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
#[inline]
fn silu_mul_lanes(_g: &[f32], _u: &[f32], _o: &mut [f32]) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_poly_is_expf_within_two_ulps_and_zero_below_the_normals() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = exp_poly(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "relative error {worst}");
        assert_eq!(exp_poly(0.0), 1.0);
        assert_eq!(exp_poly(-100.0), 0.0);
        assert_eq!(exp_poly(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_poly(100.0), f32::INFINITY);
        let e88 = exp_poly(88.0) as f64;
        assert!((e88 - 88f64.exp()).abs() < 2.0 * f32::EPSILON as f64 * e88);
        assert!(exp_poly(f32::NAN).is_nan());
    }

    #[test]
    fn exp_lanes_give_the_scalar_bits() {
        // 8-lane chunks and the scalar tail must agree bit for bit.
        let row: Vec<f32> = (0..23).map(|i| -(i as f32) * 3.7 - 0.01).collect();
        let mut lanes = row.clone();
        let sum = exp_sub_sum(&mut lanes, 0.5);
        let scalar: Vec<f32> = row.iter().map(|x| exp_poly(x - 0.5)).collect();
        assert_eq!(lanes, scalar);
        assert!((sum - scalar.iter().sum::<f32>()).abs() <= 1e-6 * sum);
        let mut special = [
            f32::NEG_INFINITY,
            -90.0,
            f32::NAN,
            0.0,
            -1.0,
            -2.0,
            -3.0,
            -4.0,
        ];
        exp_sub_sum(&mut special, 0.0);
        assert_eq!(special[..2], [0.0, 0.0]);
        assert!(special[2].is_nan());
        assert_eq!(special[3], 1.0);
    }

    #[test]
    fn silu_mul_is_swiglu_and_lanes_match_the_tail() {
        let g: Vec<f32> = (0..4099)
            .map(|i| (i as f32 - 2049.0) / 20.0)
            .chain([f32::NAN, 100.0, -100.0, 0.0])
            .collect();
        let u: Vec<f32> = (0..g.len()).map(|i| 1.0 + (i % 7) as f32 / 3.0).collect();
        let mut out = vec![0f32; g.len()];
        silu_mul(&g, &u, &mut out);
        for (i, ((o, g), u)) in out.iter().zip(&g).zip(&u).enumerate() {
            let want = (*g as f64) / (1.0 + (-*g as f64).exp()) * *u as f64;
            if g.is_nan() {
                assert!(o.is_nan());
                continue;
            }
            assert!(
                ((*o as f64) - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs() + 1e-30,
                "[{i}] silu({g}) * {u}: {o} vs {want}"
            );
        }
        // A chunk's lanes and the scalar tail agree bit for bit: the same values at an
        // offset that moves them from lanes to the tail.
        let mut tail = vec![0f32; 5];
        silu_mul(&g[8..13], &u[8..13], &mut tail);
        assert_eq!(tail, out[8..13]);
    }

    #[test]
    fn swiglu_takes_each_rows_gate_then_up_and_gives_silu_muls_bits() {
        for (rows, width) in [(1, 13), (7, 1000), (40, 4864)] {
            let y: Vec<f32> = (0..rows * 2 * width)
                .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 50.0)
                .collect();
            let mut out = vec![f32::NAN; rows * width];
            swiglu(&y, width, &mut out);
            for r in 0..rows {
                let row = &y[r * 2 * width..][..2 * width];
                let mut want = vec![0f32; width];
                silu_mul(&row[..width], &row[width..], &mut want);
                assert_eq!(
                    out[r * width..][..width],
                    want[..],
                    "{rows}x{width}: row {r}"
                );
            }
        }
    }
}
