//! CPU kernels for GGUF Q4_0 and Q8_0 weights, repacked at load for decode speed.
//!
//! Same arithmetic as llama.cpp (and candle): activations are quantized to Q8_0 blocks
//! (32 values, scale = amax / 127 rounded to f16) once per matmul, and each weight block
//! contributes `d_w * d_a * Σ q_w q_a` in exact integer dot products. What differs is
//! the layout and the loop: scales and quants live in separate arrays (eight f16 scales
//! widen in one instruction), four weight rows share each activation load with four
//! independent accumulators, and rows are split across the rayon pool.
//!
//! The SIMD path needs avx2 + fma + f16c at compile time (x86-64-v3); otherwise a scalar
//! path computes the same sums.

use rayon::prelude::*;

/// Values per block.
pub const QK: usize = 32;
const ROWS: usize = 4;
const ROWS_PER_TASK: usize = 32;

/// The two repacked block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 4-bit, offset 8: value = d * (q - 8).
    Q4_0,
    /// 8-bit signed: value = d * q.
    Q8_0,
}

impl QKind {
    fn quant_bytes(self) -> usize {
        match self {
            QKind::Q4_0 => QK / 2,
            QKind::Q8_0 => QK,
        }
    }

    fn block_bytes(self) -> usize {
        2 + self.quant_bytes()
    }
}

/// A [rows, cols] matrix of Q4_0/Q8_0 blocks, scales and quants split.
#[derive(Debug)]
pub struct PackedQ {
    /// Block format.
    pub kind: QKind,
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of 32).
    pub cols: usize,
    /// Blocks per row.
    nb: usize,
    /// Blocks per row rounded up to 8 (scale rows are zero-padded to it).
    nb_pad: usize,
    /// f16 bits of the block scales, [rows, nb_pad].
    scales: Vec<u16>,
    /// Blocks per row rounded up to 2 (Q4_0 stores blocks in pairs).
    nb_even: usize,
    /// Quants. Q8_0: [rows, nb, 32] i8. Q4_0: [rows, nb_even / 2, 32] bytes, byte `j` of
    /// pair `p` holding element `j` of block `2p` (low nibble) and of block `2p + 1`
    /// (high nibble), so one 32-byte load and two masks give two blocks in order.
    quants: Vec<u8>,
}

impl PackedQ {
    /// Repacks GGUF block data (`rows * cols / 32` blocks of `2 + quant_bytes` bytes).
    pub fn from_gguf_blocks(kind: QKind, rows: usize, cols: usize, data: &[u8]) -> Option<Self> {
        if !cols.is_multiple_of(QK) {
            return None;
        }
        let nb = cols / QK;
        let nb_pad = nb.next_multiple_of(8);
        let nb_even = nb.next_multiple_of(2);
        let bb = kind.block_bytes();
        if data.len() != rows * nb * bb {
            return None;
        }
        let mut scales = vec![0u16; rows * nb_pad];
        let row_bytes = match kind {
            QKind::Q8_0 => nb * QK,
            QKind::Q4_0 => nb_even * QK / 2,
        };
        let mut quants = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            for b in 0..nb {
                let blk = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                scales[r * nb_pad + b] = u16::from_le_bytes([blk[0], blk[1]]);
                let q = &blk[2..];
                match kind {
                    QKind::Q8_0 => {
                        quants[(r * nb + b) * QK..(r * nb + b + 1) * QK].copy_from_slice(q)
                    }
                    QKind::Q4_0 => {
                        let pair = &mut quants[(r * nb_even + b - b % 2) * QK / 2..][..QK];
                        let shift = 4 * (b % 2);
                        for j in 0..QK / 2 {
                            pair[j] |= (q[j] & 0x0F) << shift;
                            pair[j + QK / 2] |= (q[j] >> 4) << shift;
                        }
                    }
                }
            }
        }
        Some(Self {
            kind,
            rows,
            cols,
            nb,
            nb_pad,
            nb_even,
            scales,
            quants,
        })
    }

    /// Stacks matrices of the same kind and width (rows of `parts[0]` first).
    pub fn concat_rows(parts: &[&PackedQ]) -> Option<PackedQ> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        Some(PackedQ {
            kind: first.kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            nb: first.nb,
            nb_pad: first.nb_pad,
            nb_even: first.nb_even,
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            quants: parts
                .iter()
                .flat_map(|p| p.quants.iter().copied())
                .collect(),
        })
    }

    /// The integer value of element `j` of block `b` of row `r`.
    #[inline]
    fn q(&self, r: usize, b: usize, j: usize) -> i32 {
        match self.kind {
            QKind::Q8_0 => self.quants[(r * self.nb + b) * QK + j] as i8 as i32,
            QKind::Q4_0 => {
                let byte = self.quants[(r * self.nb_even + b - b % 2) * QK / 2 + j];
                ((byte >> (4 * (b % 2))) & 0x0F) as i32 - 8
            }
        }
    }

    /// Dequantizes row `r` into `out` (len cols).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        for b in 0..self.nb {
            let d = half::f16::from_bits(self.scales[r * self.nb_pad + b]).to_f32();
            for (j, o) in out[b * QK..(b + 1) * QK].iter_mut().enumerate() {
                *o = d * self.q(r, b, j) as f32;
            }
        }
    }

    /// `out_t[j * m + i] = Σ_k x[i, k] · W[j, k]` for `x` [m, cols] row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize, out_t: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.cols);
        debug_assert_eq!(out_t.len(), m * self.rows);
        if m == 0 || self.rows == 0 {
            return;
        }
        let act = QAct::quantize(x, m, self.nb, self.nb_even, self.nb_pad);
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, out)| {
                let j0 = task * ROWS_PER_TASK;
                let rows = out.len() / m;
                let mut j = 0;
                while j < rows {
                    // The last group repeats its final row instead of reading past the end.
                    let idx: [usize; ROWS] = std::array::from_fn(|r| j0 + (j + r).min(rows - 1));
                    for i in 0..m {
                        let d = self.dot4(&act, i, idx);
                        for (r, v) in d.iter().enumerate().take(rows - j) {
                            out[(j + r) * m + i] = *v;
                        }
                    }
                    j += ROWS;
                }
            });
    }

    fn dot4(&self, act: &QAct, i: usize, rows: [usize; ROWS]) -> [f32; ROWS] {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))]
        {
            // SAFETY: features enabled at compile time; every index below is within the
            // row's `nb` blocks of quants and `nb_pad` scales, and the activation's too.
            unsafe { avx::dot4(self, act, i, rows) }
        }
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        )))]
        {
            rows.map(|r| self.dot_scalar(act, i, r))
        }
    }

    #[allow(dead_code)]
    fn dot_scalar(&self, act: &QAct, i: usize, r: usize) -> f32 {
        let mut sum = 0f32;
        for b in 0..self.nb {
            let dw = half::f16::from_bits(self.scales[r * self.nb_pad + b]).to_f32();
            let da = act.d[i * self.nb_pad + b];
            let a = &act.qs[(i * self.nb_even + b) * QK..(i * self.nb_even + b + 1) * QK];
            let s: i32 = (0..QK).map(|j| self.q(r, b, j) * a[j] as i32).sum();
            sum += dw * da * s as f32;
        }
        sum
    }
}

/// Activations quantized to Q8_0 blocks.
struct QAct {
    /// [m, nb_even, 32] (a zero block pads odd counts).
    qs: Vec<i8>,
    /// Scales (f16-rounded, as f32), [m, nb_pad], zero-padded.
    d: Vec<f32>,
    /// d * Σ q per block, [m, nb_pad] (the Q4_0 offset correction).
    s: Vec<f32>,
}

impl QAct {
    fn quantize(x: &[f32], m: usize, nb: usize, nb_even: usize, nb_pad: usize) -> Self {
        let mut qs = vec![0i8; m * nb_even * QK];
        let mut d = vec![0f32; m * nb_pad];
        let mut s = vec![0f32; m * nb_pad];
        for i in 0..m {
            for b in 0..nb {
                let xs = &x[(i * nb + b) * QK..(i * nb + b + 1) * QK];
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let dd = amax / 127.0;
                let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
                let q = &mut qs[(i * nb_even + b) * QK..(i * nb_even + b + 1) * QK];
                let mut sum = 0i32;
                for (qv, xv) in q.iter_mut().zip(xs) {
                    *qv = (xv * id).round() as i8;
                    sum += *qv as i32;
                }
                let dr = half::f16::from_f32(dd).to_f32();
                d[i * nb_pad + b] = dr;
                s[i * nb_pad + b] = dr * sum as f32;
            }
        }
        Self { qs, d, s }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod avx {
    use std::arch::x86_64::*;

    use super::{PackedQ, QAct, QK, QKind, ROWS};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    #[inline(always)]
    pub(super) unsafe fn dot4(
        p: &PackedQ,
        act: &QAct,
        i: usize,
        rows: [usize; ROWS],
    ) -> [f32; ROWS] {
        match p.kind {
            QKind::Q4_0 => unsafe { dot4_kind::<true>(p, act, i, rows) },
            QKind::Q8_0 => unsafe { dot4_kind::<false>(p, act, i, rows) },
        }
    }

    #[inline(always)]
    unsafe fn dot4_kind<const Q4: bool>(
        p: &PackedQ,
        act: &QAct,
        i: usize,
        rows: [usize; ROWS],
    ) -> [f32; ROWS] {
        unsafe {
            let (nb, nb_pad, nb_even) = (p.nb, p.nb_pad, p.nb_even);
            let ones = _mm256_set1_epi16(1);
            let low4 = _mm256_set1_epi8(0x0F);
            let mut acc0 = [_mm256_setzero_ps(); ROWS];
            let mut acc1 = [_mm256_setzero_ps(); ROWS];
            let mut corr = [_mm256_setzero_ps(); ROWS];
            let aq = act.qs.as_ptr().add(i * nb_even * QK);
            let ad = act.d.as_ptr().add(i * nb_pad);
            let asum = act.s.as_ptr().add(i * nb_pad);
            let sp: [*const u16; ROWS] = rows.map(|r| p.scales.as_ptr().add(r * nb_pad));
            let row_bytes = if Q4 { nb_even * QK / 2 } else { nb * QK };
            let qp: [*const u8; ROWS] = rows.map(|r| p.quants.as_ptr().add(r * row_bytes));
            let mut g = 0;
            while g < nb {
                let da8 = _mm256_loadu_ps(ad.add(g));
                let mut ds = [_mm256_setzero_ps(); ROWS];
                for r in 0..ROWS {
                    let dw8 = _mm256_cvtph_ps(_mm_loadu_si128(sp[r].add(g) as *const __m128i));
                    ds[r] = _mm256_mul_ps(dw8, da8);
                    if Q4 {
                        corr[r] = _mm256_fmadd_ps(dw8, _mm256_loadu_ps(asum.add(g)), corr[r]);
                    }
                }
                let end = (g + 8).min(nb);
                // Two blocks per step (g is even; an odd tail pairs with a zero block).
                let mut b = g;
                while b < end {
                    let a0 = _mm256_loadu_si256(aq.add(b * QK) as *const __m256i);
                    let l0 = _mm256_set1_epi32((b - g) as i32);
                    let l1 = _mm256_set1_epi32((b - g + 1) as i32);
                    if Q4 {
                        let a1 = _mm256_loadu_si256(aq.add((b + 1) * QK) as *const __m256i);
                        for r in 0..ROWS {
                            let v = _mm256_loadu_si256(qp[r].add(b * QK / 2) as *const __m256i);
                            let lo = _mm256_and_si256(v, low4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                            let d0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), ones);
                            let d1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), ones);
                            acc0[r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(d0),
                                _mm256_permutevar8x32_ps(ds[r], l0),
                                acc0[r],
                            );
                            acc1[r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(d1),
                                _mm256_permutevar8x32_ps(ds[r], l1),
                                acc1[r],
                            );
                        }
                    } else {
                        let has1 = b + 1 < end;
                        let a1 = if has1 {
                            _mm256_loadu_si256(aq.add((b + 1) * QK) as *const __m256i)
                        } else {
                            _mm256_setzero_si256()
                        };
                        for r in 0..ROWS {
                            let w0 = _mm256_loadu_si256(qp[r].add(b * QK) as *const __m256i);
                            let d0 = _mm256_madd_epi16(
                                _mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(a0, w0)),
                                ones,
                            );
                            acc0[r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(d0),
                                _mm256_permutevar8x32_ps(ds[r], l0),
                                acc0[r],
                            );
                            if has1 {
                                let w1 =
                                    _mm256_loadu_si256(qp[r].add((b + 1) * QK) as *const __m256i);
                                let d1 = _mm256_madd_epi16(
                                    _mm256_maddubs_epi16(
                                        _mm256_abs_epi8(w1),
                                        _mm256_sign_epi8(a1, w1),
                                    ),
                                    ones,
                                );
                                acc1[r] = _mm256_fmadd_ps(
                                    _mm256_cvtepi32_ps(d1),
                                    _mm256_permutevar8x32_ps(ds[r], l1),
                                    acc1[r],
                                );
                            }
                        }
                    }
                    b += 2;
                }
                g += 8;
            }
            let mut out = [0f32; ROWS];
            for r in 0..ROWS {
                out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r]));
                if Q4 {
                    out[r] -= 8.0 * hsum(corr[r]);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(kind: QKind, rows: usize, cols: usize) -> Vec<u8> {
        let nb = cols / QK;
        let mut out = Vec::new();
        for r in 0..rows {
            for b in 0..nb {
                let d = half::f16::from_f32(0.01 + 0.001 * ((r * 7 + b) % 5) as f32);
                out.extend(d.to_le_bytes());
                for j in 0..kind.quant_bytes() {
                    out.push(((r * 31 + b * 17 + j * 13) % 256) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn concatenated_rows_multiply_like_the_parts() {
        for kind in [QKind::Q4_0, QKind::Q8_0] {
            let cols = 32;
            let a = PackedQ::from_gguf_blocks(kind, 5, cols, &blocks(kind, 5, cols)).expect("a");
            let b = PackedQ::from_gguf_blocks(kind, 3, cols, &blocks(kind, 3, cols)).expect("b");
            let ab = PackedQ::concat_rows(&[&a, &b]).expect("same kind");
            let x: Vec<f32> = (0..cols).map(|i| i as f32 / 7.0 - 2.0).collect();
            let (mut oa, mut ob, mut oab) = (vec![0f32; 5], vec![0f32; 3], vec![0f32; 8]);
            a.matmul_t(&x, 1, &mut oa);
            b.matmul_t(&x, 1, &mut ob);
            ab.matmul_t(&x, 1, &mut oab);
            assert_eq!(oab, [oa, ob].concat(), "{kind:?}");
        }
    }

    #[test]
    fn matches_scalar_and_dequantized() {
        for (kind, cols) in [QKind::Q4_0, QKind::Q8_0]
            .into_iter()
            .flat_map(|k| [(k, 320), (k, 288), (k, 32)])
        {
            let (rows, m) = (13, 3);
            let p = PackedQ::from_gguf_blocks(kind, rows, cols, &blocks(kind, rows, cols))
                .expect("valid blocks");
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let mut out_t = vec![0f32; rows * m];
            p.matmul_t(&x, m, &mut out_t);
            let act = QAct::quantize(&x, m, p.nb, p.nb_even, p.nb_pad);
            let mut w = vec![0f32; cols];
            for r in 0..rows {
                p.row_f32(r, &mut w);
                for i in 0..m {
                    let exact: f32 = (0..cols).map(|c| w[c] * x[i * cols + c]).sum();
                    let scale: f32 = (0..cols).map(|c| (w[c] * x[i * cols + c]).abs()).sum();
                    let q = p.dot_scalar(&act, i, r);
                    let got = out_t[r * m + i];
                    assert!(
                        (got - q).abs() <= 1e-4 * q.abs().max(1.0),
                        "{kind:?} {r} {i}: {got} vs {q}"
                    );
                    assert!(
                        (got - exact).abs() <= 0.01 * scale,
                        "{kind:?} {r} {i}: {got} vs exact {exact}"
                    );
                }
            }
        }
    }
}
