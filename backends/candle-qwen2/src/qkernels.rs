//! CPU kernels for GGUF Q4_0, Q4_1 and Q8_0 weights, repacked at load for decode speed.
//!
//! Same arithmetic as llama.cpp (and candle): activations are quantized to Q8_0 blocks
//! (32 values, scale = amax / 127 rounded to f16) once per matmul, and each weight block
//! contributes `d_w * d_a * Σ q_w q_a` with the sum computed exactly in integers.
//!
//! What differs is the layout. Weights are stored as unsigned bytes `u = q + offset`
//! (offset 8 for Q4_0, 128 for Q8_0, 0 for Q4_1's unsigned nibbles) and interleaved in groups of eight rows: for each
//! block, one 32-byte word holds four consecutive values of each of the eight rows, so
//! one `u8 × i8` dot-product instruction (`vpdpbusd`) against four broadcast activation
//! bytes advances all eight rows at once, and the eight integer sums land in the eight
//! lanes of one register, ready to be scaled by the eight rows' block scales (loaded
//! together, also interleaved). The offset is taken back out with the activation
//! block's integer sum: `Σ (u - off) a = Σ u a - off Σ a`. Q4_1's per-block minimum
//! `m` (value = d·u + m) adds `m · d_a Σ a` the same way.
//!
//! Kernels are picked at run time: AVX-512 VNNI (256-bit, with 32 registers) where the
//! CPU has it, AVX2 + FMA + F16C otherwise, and a scalar loop elsewhere; all three
//! compute the same integer sums, so they agree up to f32 summation order.

use crate::grouped::{GROUP, concat, par_groups, stackable};

/// Values per block.
pub const QK: usize = 32;
/// 32-bit words (four values each) per block.
const WORDS: usize = QK / 4;

/// The two repacked block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// 4-bit, offset 8: value = d * (q - 8).
    Q4_0,
    /// 4-bit with a minimum: value = d * q + m.
    Q4_1,
    /// 8-bit signed: value = d * q.
    Q8_0,
}

impl QKind {
    /// Bytes of quants per block in the GGUF file.
    fn gguf_quant_bytes(self) -> usize {
        match self {
            QKind::Q4_0 | QKind::Q4_1 => QK / 2,
            QKind::Q8_0 => QK,
        }
    }

    /// Bytes of one (group, block) cell of repacked quants.
    fn cell_bytes(self) -> usize {
        GROUP * self.gguf_quant_bytes()
    }

    /// The unsigned offset of the stored values.
    fn offset(self) -> i32 {
        match self {
            QKind::Q4_0 => 8,
            QKind::Q4_1 => 0,
            QKind::Q8_0 => 128,
        }
    }
}

/// A [rows, cols] matrix of Q4_0/Q4_1/Q8_0 blocks, repacked into groups of eight rows.
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
    /// Row groups (rows / 8 rounded up; padding rows have zero scales).
    groups: usize,
    /// f16 bits of the block scales, [groups, nb, 8].
    scales: Vec<u16>,
    /// Q4_1: f16 bits of the block minimums, [groups, nb, 8]; empty otherwise.
    mins: Vec<u16>,
    /// Unsigned quants, [groups, nb, cell]. Q8_0: word `k` (32 bytes) of a cell holds,
    /// at bytes `4r..4r + 4`, values `4k..4k + 4` of row `r` of the group. Q4_0: word
    /// `c` (c < 4) holds values `4c..4c + 4` of each row in its low nibbles and values
    /// `16 + 4c..16 + 4c + 4` in its high nibbles (Q4_1 too).
    quants: Vec<u8>,
}

impl PackedQ {
    /// Repacks GGUF block data (`rows * cols / 32` blocks of f16 scale (and, for Q4_1,
    /// f16 minimum) then quants).
    pub fn from_gguf_blocks(kind: QKind, rows: usize, cols: usize, data: &[u8]) -> Option<Self> {
        if !cols.is_multiple_of(QK) {
            return None;
        }
        let nb = cols / QK;
        let head = if kind == QKind::Q4_1 { 4 } else { 2 };
        let bb = head + kind.gguf_quant_bytes();
        if data.len() != rows * nb * bb {
            return None;
        }
        let groups = rows.div_ceil(GROUP);
        let cell = kind.cell_bytes();
        let mut scales = vec![0u16; groups * nb * GROUP];
        let mut mins = if kind == QKind::Q4_1 {
            vec![0u16; groups * nb * GROUP]
        } else {
            Vec::new()
        };
        let mut quants = vec![0u8; groups * nb * cell];
        let mut values = [0u8; QK];
        for r in 0..rows {
            let (g, lane) = (r / GROUP, r % GROUP);
            for b in 0..nb {
                let blk = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
                scales[(g * nb + b) * GROUP + lane] = u16::from_le_bytes([blk[0], blk[1]]);
                if kind == QKind::Q4_1 {
                    mins[(g * nb + b) * GROUP + lane] = u16::from_le_bytes([blk[2], blk[3]]);
                }
                let q = &blk[head..];
                match kind {
                    // GGUF Q4_0/Q4_1: byte j holds value j (low nibble) and j + 16 (high).
                    QKind::Q4_0 | QKind::Q4_1 => {
                        for j in 0..QK / 2 {
                            values[j] = q[j] & 0x0F;
                            values[j + QK / 2] = q[j] >> 4;
                        }
                    }
                    QKind::Q8_0 => {
                        for (v, &byte) in values.iter_mut().zip(q) {
                            *v = byte ^ 0x80;
                        }
                    }
                }
                let out = &mut quants[(g * nb + b) * cell..(g * nb + b + 1) * cell];
                for (e, &v) in values.iter().enumerate() {
                    let (byte, shift) = Self::position(kind, lane, e);
                    out[byte] |= v << shift;
                }
            }
        }
        Some(Self {
            kind,
            rows,
            cols,
            nb,
            groups,
            scales,
            mins,
            quants,
        })
    }

    /// Where value `e` of lane `lane` sits in a cell: (byte, bit shift).
    #[inline]
    fn position(kind: QKind, lane: usize, e: usize) -> (usize, u32) {
        let (word, t) = (e / 4, e % 4);
        match kind {
            QKind::Q8_0 => (word * 32 + lane * 4 + t, 0),
            QKind::Q4_0 | QKind::Q4_1 => ((word % 4) * 32 + lane * 4 + t, 4 * (word / 4) as u32),
        }
    }

    /// Stacks matrices of the same kind and width (rows of `parts[0]` first); `None`
    /// when they differ or a part other than the last has rows that are not a multiple
    /// of eight (its last group would be partly padding).
    pub fn concat_rows(parts: &[&PackedQ]) -> Option<PackedQ> {
        if !stackable(parts.iter().map(|p| (p.kind, p.rows, p.cols))) {
            return None;
        }
        Some(PackedQ {
            kind: parts[0].kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: parts[0].cols,
            nb: parts[0].nb,
            groups: parts.iter().map(|p| p.groups).sum(),
            scales: concat(parts, |p| &p.scales),
            mins: concat(parts, |p| &p.mins),
            quants: concat(parts, |p| &p.quants),
        })
    }

    /// The unsigned stored value of element `e` of block `b` of row `r`.
    #[inline]
    fn stored(&self, r: usize, b: usize, e: usize) -> i32 {
        let (g, lane) = (r / GROUP, r % GROUP);
        let (byte, shift) = Self::position(self.kind, lane, e);
        let v = self.quants[(g * self.nb + b) * self.kind.cell_bytes() + byte] >> shift;
        match self.kind {
            QKind::Q4_0 | QKind::Q4_1 => (v & 0x0F) as i32,
            QKind::Q8_0 => v as i32,
        }
    }

    #[inline]
    fn scale(&self, r: usize, b: usize) -> f32 {
        let (g, lane) = (r / GROUP, r % GROUP);
        half::f16::from_bits(self.scales[(g * self.nb + b) * GROUP + lane]).to_f32()
    }

    /// The block minimum (Q4_1), zero for the other kinds.
    #[inline]
    fn min(&self, r: usize, b: usize) -> f32 {
        let (g, lane) = (r / GROUP, r % GROUP);
        self.mins
            .get((g * self.nb + b) * GROUP + lane)
            .map_or(0.0, |m| half::f16::from_bits(*m).to_f32())
    }

    /// Dequantizes row `r` into `out` (len cols).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let off = self.kind.offset();
        for b in 0..self.nb {
            let (d, mn) = (self.scale(r, b), self.min(r, b));
            for (e, o) in out[b * QK..(b + 1) * QK].iter_mut().enumerate() {
                *o = d * (self.stored(r, b, e) - off) as f32 + mn;
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
        let act = QAct::quantize(x, m, self.nb);
        let kernel = Kernel::detect();
        let min_groups = 4096 / (self.nb * m);
        par_groups(out_t, m, self.groups, min_groups, |g, out| {
            kernel.group(self, &act, g, out)
        });
    }

    /// One group's rows for every activation row, scalar (the reference for the SIMD
    /// kernels, and the path on CPUs without them).
    fn group_scalar(&self, act: &QAct, g: usize, out: &mut [f32]) {
        let m = act.m;
        let off = self.kind.offset();
        for lane in 0..out.len() / m {
            let r = g * GROUP + lane;
            for i in 0..m {
                let mut sum = 0f32;
                for b in 0..self.nb {
                    let a = &act.qs[(i * self.nb + b) * QK..][..QK];
                    let dot: i32 = (0..QK).map(|e| self.stored(r, b, e) * a[e] as i32).sum();
                    let blk = i * self.nb + b;
                    let isum = dot - off * act.sums[blk];
                    sum += self.scale(r, b) * act.d[blk] * isum as f32;
                    sum += self.min(r, b) * act.d[blk] * act.sums[blk] as f32;
                }
                out[lane * m + i] = sum;
            }
        }
    }
}

/// Activations quantized to Q8_0 blocks.
struct QAct {
    /// Rows.
    m: usize,
    /// [m, nb, 32].
    qs: Vec<i8>,
    /// Scales (f16-rounded, as f32), [m, nb].
    d: Vec<f32>,
    /// Σ q per block, [m, nb] (for the weights' offset).
    sums: Vec<i32>,
}

impl QAct {
    fn quantize(x: &[f32], m: usize, nb: usize) -> Self {
        let mut qs = vec![0i8; m * nb * QK];
        let mut d = vec![0f32; m * nb];
        let mut sums = vec![0i32; m * nb];
        for (blk, xs) in x.chunks_exact(QK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let dd = amax / 127.0;
            let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
            let q = &mut qs[blk * QK..(blk + 1) * QK];
            let mut sum = 0i32;
            for (qv, xv) in q.iter_mut().zip(xs) {
                *qv = (xv * id).round() as i8;
                sum += *qv as i32;
            }
            d[blk] = half::f16::from_f32(dd).to_f32();
            sums[blk] = sum;
        }
        Self { m, qs, d, sums }
    }
}

/// The kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Kernel::Vnni;
            }
            if avx2 {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Every kernel this CPU can run (for tests).
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let mut out = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let best = Self::detect();
            if best != Kernel::Scalar {
                out.push(Kernel::Avx2);
            }
            if best == Kernel::Vnni {
                out.push(Kernel::Vnni);
            }
        }
        out
    }

    /// Rows of group `g` (`out` is [rows of the group, m]) for every activation row.
    fn group(self, p: &PackedQ, act: &QAct, g: usize, out: &mut [f32]) {
        match self {
            Kernel::Scalar => p.group_scalar(act, g, out),
            // SAFETY: `detect` saw the CPU features each kernel is compiled for, and the
            // kernels read only within group `g`'s cells and the activation's blocks.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::group_avx2(p, act, g, out) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => unsafe { x86::group_vnni(p, act, g, out) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, PackedQ, QAct, QK, QKind, WORDS};

    /// The body shared by both kernels: for each tile of `$tile` activation rows, walk
    /// the group's blocks, load (and for 4-bit kinds unpack) the eight weight words once, and
    /// dot them with each row's broadcast activation words through `$dot`.
    macro_rules! group_kernel {
        ($p:ident, $act:ident, $g:ident, $out:ident, $tile:literal, $q8_prep:ident, $dot:ident, $q8_off:expr) => {{
            let (nb, m) = ($p.nb, $act.m);
            let q4 = $p.kind != QKind::Q8_0;
            let with_min = $p.kind == QKind::Q4_1;
            let off = match $p.kind {
                QKind::Q4_0 => 8,
                QKind::Q4_1 => 0,
                QKind::Q8_0 => $q8_off,
            };
            let cell = $p.kind.cell_bytes();
            let sp = $p.scales.as_ptr().add($g * nb * GROUP);
            let mp = $p.mins.as_ptr().wrapping_add($g * nb * GROUP);
            let qp = $p.quants.as_ptr().add($g * nb * cell);
            let lanes = $out.len() / m;
            let low4 = _mm256_set1_epi8(0x0F);
            let mut i0 = 0;
            while i0 < m {
                let tile = (m - i0).min($tile);
                let mut acc = [_mm256_setzero_ps(); $tile];
                for b in 0..nb {
                    let c = qp.add(b * cell);
                    // Keep more of the stream in flight than the hardware prefetcher
                    // does on its own (the cells are read strictly in order).
                    let ahead = c.wrapping_add(PREFETCH_AHEAD);
                    let mut line = 0;
                    while line < cell {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
                        line += 64;
                    }
                    let mut w = [_mm256_setzero_si256(); WORDS];
                    if q4 {
                        for k in 0..WORDS / 2 {
                            let v = _mm256_loadu_si256(c.add(32 * k) as *const __m256i);
                            w[k] = _mm256_and_si256(v, low4);
                            w[k + WORDS / 2] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
                        }
                    } else {
                        for (k, wk) in w.iter_mut().enumerate() {
                            *wk = $q8_prep(_mm256_loadu_si256(c.add(32 * k) as *const __m256i));
                        }
                    }
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(b * GROUP) as *const __m128i));
                    let mw = if with_min {
                        _mm256_cvtph_ps(_mm_loadu_si128(mp.add(b * GROUP) as *const __m128i))
                    } else {
                        _mm256_setzero_ps()
                    };
                    for t in 0..tile {
                        let blk = (i0 + t) * nb + b;
                        let a = $act.qs.as_ptr().add(blk * QK) as *const i32;
                        let mut s0 = _mm256_setzero_si256();
                        let mut s1 = _mm256_setzero_si256();
                        for k in (0..WORDS).step_by(2) {
                            s0 = $dot(s0, w[k], _mm256_set1_epi32(a.add(k).read_unaligned()), q4);
                            s1 = $dot(
                                s1,
                                w[k + 1],
                                _mm256_set1_epi32(a.add(k + 1).read_unaligned()),
                                q4,
                            );
                        }
                        let isum = _mm256_sub_epi32(
                            _mm256_add_epi32(s0, s1),
                            _mm256_set1_epi32(off * *$act.sums.get_unchecked(blk)),
                        );
                        let da = *$act.d.get_unchecked(blk);
                        let ds = _mm256_mul_ps(dw, _mm256_set1_ps(da));
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), ds, acc[t]);
                        if with_min {
                            let s = da * *$act.sums.get_unchecked(blk) as f32;
                            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(s), acc[t]);
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate().take(tile) {
                    let mut v = [0f32; GROUP];
                    _mm256_storeu_ps(v.as_mut_ptr(), *a);
                    for (lane, x) in v.iter().enumerate().take(lanes) {
                        *$out.get_unchecked_mut(lane * m + i0 + t) = *x;
                    }
                }
                i0 += tile;
            }
        }};
    }

    /// How far ahead of the cell being read to prefetch (bytes): 2 KiB, measured best
    /// of 0 / 256 / 512 / 1024 / 2048 / 4096 for Q4_0 decode on the benchmark machine.
    const PREFETCH_AHEAD: usize = 2048;

    #[inline(always)]
    unsafe fn keep(v: __m256i) -> __m256i {
        v
    }

    /// Q8_0 weights back to signed bytes (the AVX2 dot needs a sign it can flip).
    #[inline(always)]
    unsafe fn to_signed(v: __m256i) -> __m256i {
        unsafe { _mm256_xor_si256(v, _mm256_set1_epi8(-128)) }
    }

    #[inline(always)]
    unsafe fn dot_vnni(acc: __m256i, w: __m256i, a: __m256i, _q4: bool) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(acc, w, a) }
    }

    #[inline(always)]
    unsafe fn dot_avx2(acc: __m256i, w: __m256i, a: __m256i, q4: bool) -> __m256i {
        unsafe {
            // Nibbles: unsigned 0..15 times signed bytes never saturate the i16 pair sums.
            // Q8_0 (signed here): |w| times a with w's sign moved onto a.
            let prod = if q4 {
                _mm256_maddubs_epi16(w, a)
            } else {
                _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
            };
            _mm256_add_epi32(acc, _mm256_madd_epi16(prod, _mm256_set1_epi16(1)))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn group_vnni(p: &PackedQ, act: &QAct, g: usize, out: &mut [f32]) {
        unsafe { group_kernel!(p, act, g, out, 4, keep, dot_vnni, 128) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn group_avx2(p: &PackedQ, act: &QAct, g: usize, out: &mut [f32]) {
        unsafe { group_kernel!(p, act, g, out, 1, to_signed, dot_avx2, 0) }
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
                if kind == QKind::Q4_1 {
                    let m = half::f16::from_f32(-0.05 + 0.01 * ((r * 3 + b) % 7) as f32);
                    out.extend(m.to_le_bytes());
                }
                for j in 0..kind.gguf_quant_bytes() {
                    out.push(((r * 31 + b * 17 + j * 13) % 256) as u8);
                }
            }
        }
        out
    }

    /// The value GGUF's own layout gives element `e` of block `b` of row `r`.
    fn gguf_value(kind: QKind, data: &[u8], nb: usize, r: usize, b: usize, e: usize) -> f32 {
        let head = if kind == QKind::Q4_1 { 4 } else { 2 };
        let bb = head + kind.gguf_quant_bytes();
        let blk = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let q = &blk[head..];
        let nibble = |e: usize| if e < 16 { q[e] & 0x0F } else { q[e - 16] >> 4 } as i32;
        match kind {
            QKind::Q4_0 => d * (nibble(e) - 8) as f32,
            QKind::Q4_1 => {
                d * nibble(e) as f32 + half::f16::from_le_bytes([blk[2], blk[3]]).to_f32()
            }
            QKind::Q8_0 => d * (q[e] as i8) as f32,
        }
    }

    #[test]
    fn rows_dequantize_like_gguf() {
        for kind in [QKind::Q4_0, QKind::Q4_1, QKind::Q8_0] {
            let (rows, cols) = (11, 64);
            let data = blocks(kind, rows, cols);
            let p = PackedQ::from_gguf_blocks(kind, rows, cols, &data).expect("valid");
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                p.row_f32(r, &mut row);
                for (c, v) in row.iter().enumerate() {
                    let want = gguf_value(kind, &data, cols / QK, r, c / QK, c % QK);
                    assert_eq!(*v, want, "{kind:?} row {r} col {c}");
                }
            }
        }
    }

    #[test]
    fn concatenated_rows_multiply_like_the_parts() {
        for kind in [QKind::Q4_0, QKind::Q4_1, QKind::Q8_0] {
            let cols = 32;
            let a = PackedQ::from_gguf_blocks(kind, 8, cols, &blocks(kind, 8, cols)).expect("a");
            let b = PackedQ::from_gguf_blocks(kind, 3, cols, &blocks(kind, 3, cols)).expect("b");
            assert!(
                PackedQ::concat_rows(&[&b, &a]).is_none(),
                "3 rows, then more"
            );
            let ab = PackedQ::concat_rows(&[&a, &b]).expect("same kind");
            let x: Vec<f32> = (0..cols).map(|i| i as f32 / 7.0 - 2.0).collect();
            let (mut oa, mut ob, mut oab) = (vec![0f32; 8], vec![0f32; 3], vec![0f32; 11]);
            a.matmul_t(&x, 1, &mut oa);
            b.matmul_t(&x, 1, &mut ob);
            ab.matmul_t(&x, 1, &mut oab);
            assert_eq!(oab, [oa, ob].concat(), "{kind:?}");
        }
    }

    #[test]
    fn every_kernel_matches_the_scalar_sums_and_the_dequantized_product() {
        for (kind, cols) in [QKind::Q4_0, QKind::Q4_1, QKind::Q8_0]
            .into_iter()
            .flat_map(|k| [(k, 320), (k, 288), (k, 32)])
        {
            for m in [1, 3, 6] {
                let rows = 13;
                let p = PackedQ::from_gguf_blocks(kind, rows, cols, &blocks(kind, rows, cols))
                    .expect("valid blocks");
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                    .collect();
                let act = QAct::quantize(&x, m, p.nb);
                let mut want = vec![0f32; rows * m];
                for g in 0..p.groups {
                    let end = ((g + 1) * GROUP).min(rows);
                    p.group_scalar(&act, g, &mut want[g * GROUP * m..end * m]);
                }
                let mut w = vec![0f32; cols];
                for r in 0..rows {
                    p.row_f32(r, &mut w);
                    for i in 0..m {
                        let exact: f32 = (0..cols).map(|c| w[c] * x[i * cols + c]).sum();
                        let scale: f32 = (0..cols).map(|c| (w[c] * x[i * cols + c]).abs()).sum();
                        let q = want[r * m + i];
                        assert!(
                            (q - exact).abs() <= 0.01 * scale,
                            "{kind:?} {r} {i}: {q} vs exact {exact}"
                        );
                    }
                }
                for kernel in Kernel::available() {
                    let mut got = vec![0f32; rows * m];
                    for g in 0..p.groups {
                        let end = ((g + 1) * GROUP).min(rows);
                        kernel.group(&p, &act, g, &mut got[g * GROUP * m..end * m]);
                    }
                    for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                            "{kernel:?} {kind:?} cols {cols} m {m} [{j}]: {g} vs {w}"
                        );
                    }
                }
                let mut full = vec![0f32; rows * m];
                p.matmul_t(&x, m, &mut full);
                for (g, w) in full.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0));
                }
            }
        }
    }
}
