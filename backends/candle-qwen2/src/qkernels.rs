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
    /// Quants, [rows, nb, quant_bytes].
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
        let (bb, qb) = (kind.block_bytes(), kind.quant_bytes());
        if data.len() != rows * nb * bb {
            return None;
        }
        let mut scales = vec![0u16; rows * nb_pad];
        let mut quants = vec![0u8; rows * nb * qb];
        for r in 0..rows {
            for b in 0..nb {
                let blk = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                scales[r * nb_pad + b] = u16::from_le_bytes([blk[0], blk[1]]);
                quants[(r * nb + b) * qb..(r * nb + b + 1) * qb].copy_from_slice(&blk[2..]);
            }
        }
        Some(Self {
            kind,
            rows,
            cols,
            nb,
            nb_pad,
            scales,
            quants,
        })
    }

    /// Dequantizes row `r` into `out` (len cols).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let qb = self.kind.quant_bytes();
        for b in 0..self.nb {
            let d = half::f16::from_bits(self.scales[r * self.nb_pad + b]).to_f32();
            let q = &self.quants[(r * self.nb + b) * qb..(r * self.nb + b + 1) * qb];
            let o = &mut out[b * QK..(b + 1) * QK];
            match self.kind {
                QKind::Q4_0 => {
                    for j in 0..QK / 2 {
                        o[j] = d * ((q[j] & 0x0F) as i32 - 8) as f32;
                        o[j + QK / 2] = d * ((q[j] >> 4) as i32 - 8) as f32;
                    }
                }
                QKind::Q8_0 => {
                    for j in 0..QK {
                        o[j] = d * (q[j] as i8) as f32;
                    }
                }
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
        let act = QAct::quantize(x, m, self.nb, self.nb_pad);
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
        let qb = self.kind.quant_bytes();
        let mut sum = 0f32;
        for b in 0..self.nb {
            let dw = half::f16::from_bits(self.scales[r * self.nb_pad + b]).to_f32();
            let da = act.d[i * self.nb_pad + b];
            let q = &self.quants[(r * self.nb + b) * qb..(r * self.nb + b + 1) * qb];
            let a = &act.qs[(i * self.nb + b) * QK..(i * self.nb + b + 1) * QK];
            let mut s = 0i32;
            match self.kind {
                QKind::Q4_0 => {
                    for j in 0..QK / 2 {
                        s += ((q[j] & 0x0F) as i32 - 8) * a[j] as i32;
                        s += ((q[j] >> 4) as i32 - 8) * a[j + QK / 2] as i32;
                    }
                }
                QKind::Q8_0 => {
                    for j in 0..QK {
                        s += (q[j] as i8) as i32 * a[j] as i32;
                    }
                }
            }
            sum += dw * da * s as f32;
        }
        sum
    }
}

/// Activations quantized to Q8_0 blocks.
struct QAct {
    /// [m, nb, 32].
    qs: Vec<i8>,
    /// Scales (f16-rounded, as f32), [m, nb_pad], zero-padded.
    d: Vec<f32>,
    /// d * Σ q per block, [m, nb_pad] (the Q4_0 offset correction).
    s: Vec<f32>,
}

impl QAct {
    fn quantize(x: &[f32], m: usize, nb: usize, nb_pad: usize) -> Self {
        let mut qs = vec![0i8; m * nb * QK];
        let mut d = vec![0f32; m * nb_pad];
        let mut s = vec![0f32; m * nb_pad];
        for i in 0..m {
            for b in 0..nb {
                let xs = &x[(i * nb + b) * QK..(i * nb + b + 1) * QK];
                let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                let dd = amax / 127.0;
                let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
                let q = &mut qs[(i * nb + b) * QK..(i * nb + b + 1) * QK];
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
            let qb = if Q4 { QK / 2 } else { QK };
            let (nb, nb_pad) = (p.nb, p.nb_pad);
            let ones = _mm256_set1_epi16(1);
            let low4 = _mm_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); ROWS];
            let mut corr = [_mm256_setzero_ps(); ROWS];
            let aq = act.qs.as_ptr().add(i * nb * QK);
            let ad = act.d.as_ptr().add(i * nb_pad);
            let asum = act.s.as_ptr().add(i * nb_pad);
            let sp: [*const u16; ROWS] = rows.map(|r| p.scales.as_ptr().add(r * nb_pad));
            let qp: [*const u8; ROWS] = rows.map(|r| p.quants.as_ptr().add(r * nb * qb));
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
                for b in g..end {
                    let a = _mm256_loadu_si256(aq.add(b * QK) as *const __m256i);
                    let lane = _mm256_set1_epi32((b - g) as i32);
                    for r in 0..ROWS {
                        let prod = if Q4 {
                            let w = _mm_loadu_si128(qp[r].add(b * qb) as *const __m128i);
                            let lo = _mm_and_si128(w, low4);
                            let hi = _mm_and_si128(_mm_srli_epi16::<4>(w), low4);
                            let w = _mm256_set_m128i(hi, lo);
                            _mm256_maddubs_epi16(w, a)
                        } else {
                            let w = _mm256_loadu_si256(qp[r].add(b * qb) as *const __m256i);
                            _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
                        };
                        let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                        let scale = _mm256_permutevar8x32_ps(ds[r], lane);
                        acc[r] = _mm256_fmadd_ps(dot, scale, acc[r]);
                    }
                }
                g += 8;
            }
            let mut out = [0f32; ROWS];
            for r in 0..ROWS {
                out[r] = hsum(acc[r]);
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
    fn matches_scalar_and_dequantized() {
        for kind in [QKind::Q4_0, QKind::Q8_0] {
            let (rows, cols, m) = (13, 320, 3);
            let p = PackedQ::from_gguf_blocks(kind, rows, cols, &blocks(kind, rows, cols))
                .expect("valid blocks");
            let x: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let mut out_t = vec![0f32; rows * m];
            p.matmul_t(&x, m, &mut out_t);
            let act = QAct::quantize(&x, m, p.nb, p.nb_pad);
            let mut w = vec![0f32; cols];
            for r in 0..rows {
                p.row_f32(r, &mut w);
                for i in 0..m {
                    let exact: f32 = (0..cols).map(|c| w[c] * x[i * cols + c]).sum();
                    let q = p.dot_scalar(&act, i, r);
                    let got = out_t[r * m + i];
                    assert!(
                        (got - q).abs() <= 1e-4 * q.abs().max(1.0),
                        "{kind:?} {r} {i}: {got} vs {q}"
                    );
                    assert!(
                        (got - exact).abs() <= 0.02 * exact.abs().max(1.0),
                        "{kind:?} {r} {i}: {got} vs exact {exact}"
                    );
                }
            }
        }
    }
}
