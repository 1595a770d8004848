//! The two products of one attention tile, register-blocked: the scores of a group's
//! query heads against up to [`super::TILE`] cached keys, and the probability-weighted
//! sum of the tile's values added to the heads' outputs.
//!
//! Keys come in blocks of sixteen positions ([d, 16] each). Scores take four query
//! heads against one block per pass (AVX2: two eight-lane halves; AVX-512: one
//! register) or two blocks (AVX-512), so each broadcast query value feeds several
//! FMAs and each key row four heads. Value sums take two heads against 32 (AVX2) or
//! 64 (AVX-512) columns, so each value row loaded feeds two heads. Everything fits the
//! registers with no spills. The kernels are chosen at run time by [`Isa`]; the scalar
//! loops are the reference and the path elsewhere.

use gllm_kernels::Isa;

use super::{KEY_BLOCK, KvElem, TILE};

/// Query heads per pass of [`scores`].
const SCORE_HEADS: usize = 4;

/// `out[j * TILE + 16 b + l] = q_j · key l of block b` for the `q.len() / d` query
/// heads `q` ([heads, d]) and the `blocks` key blocks starting at `kb` (block `b` at
/// `kb[b * block_stride..][..d * 16]`, [d, 16] each).
pub(super) fn scores<T: KvElem>(
    isa: Isa,
    q: &[f32],
    d: usize,
    kb: &[T],
    blocks: usize,
    block_stride: usize,
    out: &mut [f32],
) {
    let stride = TILE;
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
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        let mut j0 = 0;
        while j0 < heads {
            let h = SCORE_HEADS.min(heads - j0);
            // SAFETY: `isa` saw the features of the kernel called; rows j0..j0 + h of
            // q, the blocks read and their output columns are in bounds (asserted).
            unsafe {
                let qp = q.as_ptr().add(j0 * d);
                let op = out.as_mut_ptr().add(j0 * stride);
                if isa == Isa::Vnni {
                    x86::scores512(h, qp, d, kb.as_ptr(), blocks, block_stride, op);
                } else {
                    x86::scores256(h, qp, d, kb.as_ptr(), blocks, block_stride, op);
                }
            }
            j0 += h;
        }
        return;
    }
    let _ = isa;
    for j in 0..heads {
        let qj = &q[j * d..][..d];
        for b in 0..blocks {
            let o = &mut out[j * stride + b * KEY_BLOCK..][..KEY_BLOCK];
            o.fill(0.0);
            let kc = &kb[b * block_stride..][..d * KEY_BLOCK];
            for (qv, row) in qj.iter().zip(kc.chunks_exact(KEY_BLOCK)) {
                for (x, kv) in o.iter_mut().zip(row) {
                    *x = qv.mul_add(kv.to_f32(), *x);
                }
            }
        }
    }
}

/// `o_j += Σ_p w[j * w_stride + p] · v[p * v_stride..][..d]` for each head `j` of `o`
/// ([heads, d]) over the tile's first `len` positions.
#[allow(clippy::too_many_arguments)]
pub(super) fn values<T: KvElem>(
    isa: Isa,
    w: &[f32],
    w_stride: usize,
    len: usize,
    v: &[T],
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
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && d.is_multiple_of(32) {
        let wide = isa == Isa::Vnni && d.is_multiple_of(64);
        let cols = if wide { 64 } else { 32 };
        let mut j0 = 0;
        while j0 < heads {
            let h = 2.min(heads - j0);
            for c0 in (0..d).step_by(cols) {
                // SAFETY: `isa` saw the kernel's features; heads j0..j0 + h, positions
                // 0..len and columns c0..c0 + cols are in bounds (asserted).
                unsafe {
                    let wp = w.as_ptr().add(j0 * w_stride);
                    let vp = v.as_ptr().add(c0);
                    let op = o.as_mut_ptr().add(j0 * d + c0);
                    if wide {
                        x86::values512(h, wp, w_stride, len, vp, v_stride, op, d);
                    } else {
                        x86::values256(h, wp, w_stride, len, vp, v_stride, op, d);
                    }
                }
            }
            j0 += h;
        }
        return;
    }
    let _ = isa;
    for (j, oj) in o.chunks_exact_mut(d).enumerate() {
        for (p, s) in w[j * w_stride..][..len].iter().enumerate() {
            for (a, b) in oj.iter_mut().zip(&v[p * v_stride..][..d]) {
                *a = s.mul_add(b.to_f32(), *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
mod x86 {
    //! One kernel per product, generic over the register width; the entry points
    //! instantiate it with the target features of their width.

    use std::arch::x86_64::*;

    use super::super::{KEY_BLOCK, KvElem, TILE};

    /// A register of `N` f32 lanes: what the kernels need of it.
    pub(super) trait Lanes: Copy {
        /// Lanes per register.
        const N: usize;
        unsafe fn zero() -> Self;
        unsafe fn load(p: *const f32) -> Self;
        /// `N` f16 values widened.
        unsafe fn load_f16(p: *const u16) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn splat(x: f32) -> Self;
        /// `a · b + c`.
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    }

    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
    }

    impl Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
    }

    /// `N` cached values from `p`, widened when the cache is f16 (`half::f16` is its
    /// bits).
    #[inline(always)]
    unsafe fn load_kv<V: Lanes, T: KvElem>(p: *const T) -> V {
        unsafe {
            if T::F16 {
                V::load_f16(p as *const u16)
            } else {
                V::load(p as *const f32)
            }
        }
    }

    /// Scores of `h` (1..=4) heads against `blocks` key blocks, output rows [`TILE`]
    /// apart, in eight-lane registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores256<T: KvElem>(
        h: usize,
        q: *const f32,
        d: usize,
        k: *const T,
        blocks: usize,
        block_stride: usize,
        out: *mut f32,
    ) {
        unsafe { scores_with::<__m256, T>(h, q, d, k, blocks, block_stride, out) }
    }

    /// [`scores256`] in sixteen-lane registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn scores512<T: KvElem>(
        h: usize,
        q: *const f32,
        d: usize,
        k: *const T,
        blocks: usize,
        block_stride: usize,
        out: *mut f32,
    ) {
        unsafe { scores_with::<__m512, T>(h, q, d, k, blocks, block_stride, out) }
    }

    /// Calls `$f::<V, H, $r>` for the `$h` (1..=4) heads of a pass.
    macro_rules! for_heads {
        ($h:expr, $f:ident::<$v:ty, $r:literal>($($a:expr),*)) => {
            match $h {
                4 => $f::<$v, T, 4, $r>($($a),*),
                3 => $f::<$v, T, 3, $r>($($a),*),
                2 => $f::<$v, T, 2, $r>($($a),*),
                _ => $f::<$v, T, 1, $r>($($a),*),
            }
        };
    }

    /// The scores in passes of two registers (one block of two eight-lane halves, or
    /// two blocks of sixteen lanes), and a last block alone when a register holds one.
    #[inline(always)]
    unsafe fn scores_with<V: Lanes, T: KvElem>(
        h: usize,
        q: *const f32,
        d: usize,
        k: *const T,
        blocks: usize,
        block_stride: usize,
        out: *mut f32,
    ) {
        let per_pass = 2 * V::N / KEY_BLOCK;
        let mut b = 0;
        while b < blocks {
            // SAFETY (both passes): the caller's bounds cover blocks b.. of k and
            // their output columns.
            unsafe {
                let (kb, ob) = (k.add(b * block_stride), out.add(b * KEY_BLOCK));
                if blocks - b >= per_pass {
                    for_heads!(h, pass::<V, 2>(q, d, kb, block_stride, ob));
                    b += per_pass;
                } else {
                    for_heads!(h, pass::<V, 1>(q, d, kb, block_stride, ob));
                    b += 1;
                }
            }
        }
    }

    /// Scores of `H` heads against the `R · N` keys from `k`: register `r` holds keys
    /// `r · N..`, which sit in block `r · N / 16` at column `r · N % 16`.
    #[inline(always)]
    unsafe fn pass<V: Lanes, T: KvElem, const H: usize, const R: usize>(
        q: *const f32,
        d: usize,
        k: *const T,
        block_stride: usize,
        out: *mut f32,
    ) {
        unsafe {
            let at = |r: usize| r * V::N / KEY_BLOCK * block_stride + r * V::N % KEY_BLOCK;
            let mut acc = [[V::zero(); R]; H];
            for c in 0..d {
                let kc: [V; R] =
                    std::array::from_fn(|r| load_kv::<V, T>(k.add(at(r) + c * KEY_BLOCK)));
                for (j, a) in acc.iter_mut().enumerate() {
                    let qv = V::splat(*q.add(j * d + c));
                    for (x, kr) in a.iter_mut().zip(&kc) {
                        *x = V::fmadd(qv, *kr, *x);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                for (r, x) in a.iter().enumerate() {
                    x.store(out.add(j * TILE + r * V::N));
                }
            }
        }
    }

    /// 32 columns of `values` for `h` (1 or 2) heads, in eight-lane registers.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn values256<T: KvElem>(
        h: usize,
        w: *const f32,
        w_stride: usize,
        len: usize,
        v: *const T,
        v_stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        unsafe { values_with::<__m256, T>(h, w, w_stride, len, v, v_stride, o, o_stride) }
    }

    /// 64 columns of `values` for `h` (1 or 2) heads, in sixteen-lane registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub(super) unsafe fn values512<T: KvElem>(
        h: usize,
        w: *const f32,
        w_stride: usize,
        len: usize,
        v: *const T,
        v_stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        unsafe { values_with::<__m512, T>(h, w, w_stride, len, v, v_stride, o, o_stride) }
    }

    #[inline(always)]
    unsafe fn values_with<V: Lanes, T: KvElem>(
        h: usize,
        w: *const f32,
        w_stride: usize,
        len: usize,
        v: *const T,
        v_stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        unsafe {
            if h == 2 {
                sums::<V, T, 2>(w, w_stride, len, v, v_stride, o, o_stride)
            } else {
                sums::<V, T, 1>(w, w_stride, len, v, v_stride, o, o_stride)
            }
        }
    }

    /// `4 · N` columns of `H` heads' value sums, the accumulators in registers.
    #[inline(always)]
    unsafe fn sums<V: Lanes, T: KvElem, const H: usize>(
        w: *const f32,
        w_stride: usize,
        len: usize,
        v: *const T,
        v_stride: usize,
        o: *mut f32,
        o_stride: usize,
    ) {
        unsafe {
            let mut acc = [[V::zero(); 4]; H];
            for (j, row) in acc.iter_mut().enumerate() {
                for (i, a) in row.iter_mut().enumerate() {
                    *a = V::load(o.add(j * o_stride + V::N * i));
                }
            }
            for p in 0..len {
                let row = v.add(p * v_stride);
                let vv: [V; 4] = std::array::from_fn(|i| load_kv::<V, T>(row.add(V::N * i)));
                for (j, accj) in acc.iter_mut().enumerate() {
                    let s = V::splat(*w.add(j * w_stride + p));
                    for (a, x) in accj.iter_mut().zip(&vv) {
                        *a = V::fmadd(s, *x, *a);
                    }
                }
            }
            for (j, row) in acc.iter().enumerate() {
                for (i, a) in row.iter().enumerate() {
                    a.store(o.add(j * o_stride + V::N * i));
                }
            }
        }
    }
}
