//! The legacy block types (32-value blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), repacked.
//!
//! Each (group of eight rows, block) holds the eight rows' f16 scales (and for the
//! `Min` types their f16 minimums) side by side, then one chunk of packed values
//! ([`crate::planes`]). Against a Q8_0 activation block `(d_a, q_a)` a row's block
//! contributes `d · d_a · (Σ u·q_a − off · Σ q_a)` (offset types) or
//! `d · d_a · Σ u·q_a + min · d_a · Σ q_a` (minimum types), with the sums exact in
//! integers, which is llama.cpp's arithmetic for these types.

use crate::act::Q8Blocks;
use crate::error::KernelError;
use crate::format::{BlockFormat, Layout, Scales, decode_blocks, f16};
use crate::grouped::{GROUP, GroupOut, concat, par_groups_or_pairs, stackable};
use crate::isa::Isa;
use crate::planes::{self, CHUNK, chunk_bytes};

/// A [rows, cols] matrix of one legacy block type, in groups of eight rows.
#[derive(Debug, Clone)]
pub struct LegacyMatrix {
    /// The block type.
    pub ty: crate::format::BlockType,
    layout: Layout,
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of 32).
    pub cols: usize,
    /// Blocks per row.
    nb: usize,
    /// Row groups (padding rows have zero scales).
    groups: usize,
    /// f16 bits of the scales, [groups, nb, 8].
    scales: Vec<u16>,
    /// f16 bits of the minimums ([`Scales::Min`]), [groups, nb, 8]; empty otherwise.
    mins: Vec<u16>,
    /// Packed values, [groups, nb, chunk].
    quants: Vec<u8>,
}

impl LegacyMatrix {
    /// Repacks GGUF blocks of type `F` (`rows * cols / 32` of them, row-major).
    pub fn from_gguf<F: BlockFormat>(
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, KernelError> {
        crate::quant::check_data(F::TYPE, rows, cols, data)?;
        let ty = F::TYPE;
        let layout = F::LAYOUT;
        let nb = cols / CHUNK;
        let groups = rows.div_ceil(GROUP);
        let cell = chunk_bytes(layout.low_bits, layout.high_bits);
        let with_min = layout.scales == Scales::Min;
        let mut scales = vec![0u16; groups * nb * GROUP];
        let mut mins = if with_min {
            vec![0u16; groups * nb * GROUP]
        } else {
            Vec::new()
        };
        let mut quants = vec![0u8; groups * nb * cell];
        decode_blocks::<F>(rows, nb, data, |gb, lane, dec| {
            scales[gb * GROUP + lane] = dec.d;
            if with_min {
                mins[gb * GROUP + lane] = dec.dmin;
            }
            let chunk = &mut quants[gb * cell..(gb + 1) * cell];
            planes::put_row(
                chunk,
                layout.low_bits,
                layout.high_bits,
                lane,
                &dec.u[..CHUNK],
            );
        });
        Ok(Self {
            ty,
            layout,
            rows,
            cols,
            nb,
            groups,
            scales,
            mins,
            quants,
        })
    }

    fn cell(&self) -> usize {
        chunk_bytes(self.layout.low_bits, self.layout.high_bits)
    }

    /// Stacks matrices of one type and width (rows of `parts[0]` first); `None` when
    /// they differ or a part but the last has rows that are not a multiple of eight.
    pub fn concat_rows(parts: &[&LegacyMatrix]) -> Option<LegacyMatrix> {
        if !stackable(parts.iter().map(|p| (p.ty, p.rows, p.cols))) {
            return None;
        }
        Some(LegacyMatrix {
            ty: parts[0].ty,
            layout: parts[0].layout,
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
        let cell = self.cell();
        let chunk = &self.quants[(g * self.nb + b) * cell..(g * self.nb + b + 1) * cell];
        planes::get(chunk, self.layout.low_bits, self.layout.high_bits, lane, e) as i32
    }

    #[inline]
    fn scale(&self, r: usize, b: usize) -> f32 {
        f16(self.scales[((r / GROUP) * self.nb + b) * GROUP + r % GROUP])
    }

    /// The block minimum (`Min` types), zero for the others.
    #[inline]
    fn min(&self, r: usize, b: usize) -> f32 {
        self.mins
            .get(((r / GROUP) * self.nb + b) * GROUP + r % GROUP)
            .map_or(0.0, |m| f16(*m))
    }

    /// Dequantizes row `r` into `out` (len cols), as ggml does.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let off = self.layout.offset();
        for b in 0..self.nb {
            let (d, mn) = (self.scale(r, b), self.min(r, b));
            for (e, o) in out[b * CHUNK..(b + 1) * CHUNK].iter_mut().enumerate() {
                let q = self.stored(r, b, e) - off;
                *o = if self.layout.scales == Scales::Min {
                    q as f32 * d + mn
                } else {
                    q as f32 * d
                };
            }
        }
    }

    /// `out[i * rows + j] = Σ_k x[i, k] · W[j, k]` for `x` [m, cols] row-major.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_with(Isa::detect(), x, m, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (which the CPU must support).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.cols);
        debug_assert_eq!(out.len(), m * self.rows);
        if m == 0 || self.rows == 0 {
            return;
        }
        let act = &Q8Blocks::quantize(x, m, self.nb);
        let kernel = self.kernel(isa);
        let min_groups = 4096 / (self.nb * m).max(1);
        let pair = self
            .pair_kernel(isa, m)
            .map(|pair| move |g, a: &mut GroupOut, b: &mut GroupOut| pair(self, act, g, a, b));
        par_groups_or_pairs(
            out,
            self.rows,
            m,
            min_groups,
            |g, o| kernel(self, act, g, o),
            pair,
        );
    }

    /// The two-group kernel of `isa` for `m` activation rows, where there is one:
    /// on AVX-512 for several rows, sixteen weight rows per instruction.
    fn pair_kernel(&self, isa: Isa, m: usize) -> Option<PairKernel> {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Vnni && m > 1 {
            return x86::pick_vnni_pair(self.layout.low_bits, self.layout.high_bits);
        }
        let _ = (isa, m);
        None
    }

    /// The group kernel of `isa` for this layout.
    fn kernel(&self, isa: Isa) -> GroupKernel {
        #[cfg(target_arch = "x86_64")]
        {
            let (lo, hi) = (self.layout.low_bits, self.layout.high_bits);
            match isa {
                Isa::Scalar => {}
                Isa::Avx2 => return x86::pick_avx2(lo, hi),
                Isa::Vnni => return x86::pick_vnni(lo, hi),
            }
        }
        let _ = isa;
        Self::group_scalar
    }

    /// One group's rows for every activation row, scalar (the reference for the SIMD
    /// kernels, and the path on CPUs without them).
    fn group_scalar(&self, act: &Q8Blocks, g: usize, out: &mut GroupOut) {
        let m = act.m;
        let off = self.layout.offset();
        for lane in 0..out.lanes {
            let r = g * GROUP + lane;
            for i in 0..m {
                let mut sum = 0f32;
                for b in 0..self.nb {
                    let blk = i * self.nb + b;
                    let a = &act.qs[blk * CHUNK..][..CHUNK];
                    let dot: i32 = (0..CHUNK).map(|e| self.stored(r, b, e) * a[e] as i32).sum();
                    let isum = dot - off * act.sums[blk];
                    sum += self.scale(r, b) * act.d[blk] * isum as f32;
                    sum += self.min(r, b) * act.d[blk] * act.sums[blk] as f32;
                }
                out.set(i, lane, sum);
            }
        }
    }
}

/// A kernel for one group: `(matrix, activations, group, out [rows of the group, m])`.
type GroupKernel = fn(&LegacyMatrix, &Q8Blocks, usize, &mut GroupOut);

/// A kernel for groups `g` and `g + 1`, with an output each.
type PairKernel = fn(&LegacyMatrix, &Q8Blocks, usize, &mut GroupOut, &mut GroupOut);

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, GroupKernel, GroupOut, LegacyMatrix, PairKernel, Scales};
    use crate::act::Q8Blocks;
    use crate::planes::x86::unpack;
    use crate::planes::{CHUNK, chunk_bytes};

    /// How far ahead of the chunk being read to prefetch (bytes): 2 KiB, measured best
    /// of 0 / 256 / 512 / 1024 / 2048 / 4096 for Q4_0 decode.
    pub(crate) const PREFETCH_AHEAD: usize = 2048;

    /// Eight dot products of unsigned weight bytes `w` with the four activation bytes
    /// broadcast in `a`, added to `acc`. `SIGNED8`: `w` holds 8-bit values `u − 128`
    /// (AVX2 has no unsigned × signed dot that cannot saturate on full bytes).
    #[inline(always)]
    pub(crate) unsafe fn dot<const VNNI: bool, const SIGNED8: bool>(
        acc: __m256i,
        w: __m256i,
        a: __m256i,
    ) -> __m256i {
        unsafe {
            if VNNI {
                _mm256_dpbusd_epi32(acc, w, a)
            } else {
                let prod = if SIGNED8 {
                    _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
                } else {
                    _mm256_maddubs_epi16(w, a)
                };
                _mm256_add_epi32(acc, _mm256_madd_epi16(prod, _mm256_set1_epi16(1)))
            }
        }
    }

    /// How many words' `vpmaddubsw` products add up in 16 bits without overflow, for
    /// unsigned weights of `bits` bits: each i16 lane of one product is `u·a + u·a` with
    /// `|a| ≤ 127` (both activation quantizations stay in ±127), so at most
    /// `2 · (2^bits − 1) · 127`. 8 for 2-4 bits, 4 for 5, 2 for 6.
    pub(crate) const fn words_in_i16(bits: u32) -> usize {
        let per_word = 2 * ((1 << bits) - 1) * 127;
        let n = i16::MAX as usize / per_word;
        if n >= 8 {
            8
        } else if n >= 4 {
            4
        } else if n >= 2 {
            2
        } else {
            1
        }
    }

    /// The 16-bit pair sums of words `from..from + n` of `w` (unsigned weights, at most
    /// [`words_in_i16`] of them) against the activation words at `a`, broadcast: AVX2's
    /// dot product without VNNI, widened to 32 bits once per run rather than per word.
    #[inline(always)]
    pub(crate) unsafe fn maddubs_run(
        w: &[__m256i; 8],
        a: *const i32,
        from: usize,
        n: usize,
    ) -> __m256i {
        unsafe {
            let word =
                |k: usize| _mm256_maddubs_epi16(w[k], _mm256_set1_epi32(a.add(k).read_unaligned()));
            let mut p = word(from);
            for k in from + 1..from + n {
                p = _mm256_add_epi16(p, word(k));
            }
            p
        }
    }

    /// Σ u·a over one 32-value block for each of the eight rows, on AVX2, for unsigned
    /// weights of `bits` bits (a constant where inlined): runs of [`words_in_i16`] words
    /// summed in 16 bits, each widened by one `vpmaddwd`.
    #[inline(always)]
    pub(crate) unsafe fn block_sums_avx2(w: &[__m256i; 8], a: *const i32, bits: u32) -> __m256i {
        unsafe {
            let run = words_in_i16(bits);
            let ones = _mm256_set1_epi16(1);
            let mut s = _mm256_setzero_si256();
            for from in (0..8).step_by(run) {
                s = _mm256_add_epi32(s, _mm256_madd_epi16(maddubs_run(w, a, from, run), ones));
            }
            s
        }
    }

    /// Prefetches the `bytes` that follow `c` by [`PREFETCH_AHEAD`].
    #[inline(always)]
    pub(crate) unsafe fn prefetch(c: *const u8, bytes: usize) {
        let ahead = c.wrapping_add(PREFETCH_AHEAD);
        let mut line = 0;
        while line < bytes {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8) };
            line += 64;
        }
    }

    /// For each tile of `T` activation rows, walks the group's blocks, unpacks the
    /// eight weight words once and dots them with each row's broadcast activation words.
    // Register arrays are indexed by tile row and word on purpose.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn group<const LO: u32, const HI: u32, const VNNI: bool, const T: usize>(
        p: &LegacyMatrix,
        act: &Q8Blocks,
        g: usize,
        out: &mut GroupOut,
    ) {
        unsafe {
            let (nb, m) = (p.nb, act.m);
            let signed8 = !VNNI && LO == 8;
            let with_min = p.layout.scales == Scales::Min;
            let off = if signed8 { 0 } else { p.layout.offset() };
            let cell = chunk_bytes(LO, HI);
            let sp = p.scales.as_ptr().add(g * nb * GROUP);
            let mp = p.mins.as_ptr().wrapping_add(g * nb * GROUP);
            let qp = p.quants.as_ptr().add(g * nb * cell);
            let mut i0 = 0;
            while i0 < m {
                let tile = (m - i0).min(T);
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..nb {
                    let c = qp.add(b * cell);
                    prefetch(c, cell);
                    let mut w = unpack::<LO, HI>(c);
                    if signed8 {
                        for wk in w.iter_mut() {
                            *wk = _mm256_xor_si256(*wk, _mm256_set1_epi8(-128));
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
                        let a = act.qs.as_ptr().add(blk * CHUNK) as *const i32;
                        let raw = if VNNI || signed8 {
                            let mut s0 = _mm256_setzero_si256();
                            let mut s1 = _mm256_setzero_si256();
                            for k in (0..8).step_by(2) {
                                let a0 = _mm256_set1_epi32(a.add(k).read_unaligned());
                                let a1 = _mm256_set1_epi32(a.add(k + 1).read_unaligned());
                                if signed8 {
                                    s0 = dot::<VNNI, true>(s0, w[k], a0);
                                    s1 = dot::<VNNI, true>(s1, w[k + 1], a1);
                                } else {
                                    s0 = dot::<VNNI, false>(s0, w[k], a0);
                                    s1 = dot::<VNNI, false>(s1, w[k + 1], a1);
                                }
                            }
                            _mm256_add_epi32(s0, s1)
                        } else {
                            block_sums_avx2(&w, a, LO + HI)
                        };
                        let sum_a = *act.sums.get_unchecked(blk);
                        let isum = _mm256_sub_epi32(raw, _mm256_set1_epi32(off * sum_a));
                        let da = *act.d.get_unchecked(blk);
                        let ds = _mm256_mul_ps(dw, _mm256_set1_ps(da));
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), ds, acc[t]);
                        if with_min {
                            let s = da * sum_a as f32;
                            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(s), acc[t]);
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate().take(tile) {
                    let mut v = [0f32; GROUP];
                    _mm256_storeu_ps(v.as_mut_ptr(), *a);
                    out.store(i0 + t, &v);
                }
                i0 += tile;
            }
        }
    }

    /// Two 256-bit halves as one 512-bit register (`a` low).
    #[inline(always)]
    pub(crate) unsafe fn join(a: __m256i, b: __m256i) -> __m512i {
        unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b) }
    }

    /// Stores sixteen outputs of activation row `i`: the low eight to the first
    /// group's output, the high eight to the second's.
    #[inline(always)]
    pub(crate) unsafe fn store_pair(out0: &mut GroupOut, out1: &mut GroupOut, i: usize, v: __m512) {
        let mut lanes = [0f32; 2 * GROUP];
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        let (lo, hi) = lanes.split_at(GROUP);
        out0.store(i, &std::array::from_fn(|j| lo[j]));
        out1.store(i, &std::array::from_fn(|j| hi[j]));
    }

    /// [`group`] for two groups at once (`g` and `g + 1`) on 512-bit registers: each
    /// word of the two groups' chunks becomes one register of sixteen rows, so one
    /// `vpdpbusd` advances sixteen weight rows against a broadcast activation word.
    /// The same integer sums and the same f32 operations per output as [`group`].
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn group_pair<const LO: u32, const HI: u32, const T: usize>(
        p: &LegacyMatrix,
        act: &Q8Blocks,
        g: usize,
        out0: &mut GroupOut,
        out1: &mut GroupOut,
    ) {
        unsafe {
            let (nb, m) = (p.nb, act.m);
            let with_min = p.layout.scales == Scales::Min;
            let off = p.layout.offset();
            let cell = chunk_bytes(LO, HI);
            let sp0 = p.scales.as_ptr().add(g * nb * GROUP);
            let sp1 = sp0.add(nb * GROUP);
            let mp0 = p.mins.as_ptr().wrapping_add(g * nb * GROUP);
            let mp1 = mp0.wrapping_add(nb * GROUP);
            let qp0 = p.quants.as_ptr().add(g * nb * cell);
            let qp1 = qp0.add(nb * cell);
            // Sixteen f16 values, eight from each group, as f32.
            let halves = |a: *const u16, b: *const u16| {
                let lo = _mm256_castsi128_si256(_mm_loadu_si128(a as *const __m128i));
                let both = _mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(b as *const __m128i));
                _mm512_cvtph_ps(both)
            };
            let mut i0 = 0;
            while i0 < m {
                let tile = (m - i0).min(T);
                let mut acc = [_mm512_setzero_ps(); T];
                for b in 0..nb {
                    let (c0, c1) = (qp0.add(b * cell), qp1.add(b * cell));
                    prefetch(c0, cell);
                    prefetch(c1, cell);
                    let (w0, w1) = (unpack::<LO, HI>(c0), unpack::<LO, HI>(c1));
                    let w: [__m512i; 8] = std::array::from_fn(|k| join(w0[k], w1[k]));
                    let dw = halves(sp0.add(b * GROUP), sp1.add(b * GROUP));
                    let mw = if with_min {
                        halves(mp0.add(b * GROUP), mp1.add(b * GROUP))
                    } else {
                        _mm512_setzero_ps()
                    };
                    for t in 0..tile {
                        let blk = (i0 + t) * nb + b;
                        let a = act.qs.as_ptr().add(blk * CHUNK) as *const i32;
                        let sum_a = *act.sums.get_unchecked(blk);
                        // The offset's share, `off · Σ q_a`, taken out from the start.
                        let mut s0 = _mm512_set1_epi32(-off * sum_a);
                        let mut s1 = _mm512_setzero_si512();
                        for k in (0..8).step_by(2) {
                            let a0 = _mm512_set1_epi32(a.add(k).read_unaligned());
                            let a1 = _mm512_set1_epi32(a.add(k + 1).read_unaligned());
                            s0 = _mm512_dpbusd_epi32(s0, w[k], a0);
                            s1 = _mm512_dpbusd_epi32(s1, w[k + 1], a1);
                        }
                        let isum = _mm512_add_epi32(s0, s1);
                        let da = *act.d.get_unchecked(blk);
                        let ds = _mm512_mul_ps(dw, _mm512_set1_ps(da));
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), ds, acc[t]);
                        if with_min {
                            let s = da * sum_a as f32;
                            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(s), acc[t]);
                        }
                    }
                }
                for (t, a) in acc.iter().enumerate().take(tile) {
                    store_pair(out0, out1, i0 + t, *a);
                }
                i0 += tile;
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn vnni_pair<const LO: u32, const HI: u32>(
        p: &LegacyMatrix,
        a: &Q8Blocks,
        g: usize,
        o0: &mut GroupOut,
        o1: &mut GroupOut,
    ) {
        unsafe { group_pair::<LO, HI, 8>(p, a, g, o0, o1) }
    }

    /// The two-group kernel for a layout, where there is one.
    pub(super) fn pick_vnni_pair(lo: u32, hi: u32) -> Option<PairKernel> {
        // SAFETY (each closure): as in `picker!`; it reads groups `g` and `g + 1`,
        // which `par_group_pairs` hands over only when both exist.
        match (lo, hi) {
            (4, 0) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<4, 0>(p, a, g, o0, o1) }),
            (4, 1) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<4, 1>(p, a, g, o0, o1) }),
            (8, 0) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<8, 0>(p, a, g, o0, o1) }),
            _ => None,
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn vnni<const LO: u32, const HI: u32>(
        p: &LegacyMatrix,
        a: &Q8Blocks,
        g: usize,
        o: &mut GroupOut,
    ) {
        unsafe { group::<LO, HI, true, 8>(p, a, g, o) }
    }

    /// Activation rows per tile of the AVX2 kernels, legacy and k-quant (16 registers:
    /// the eight weight words, the rows' accumulators, the products).
    pub(crate) const AVX2_TILE: usize = 4;

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2<const LO: u32, const HI: u32>(
        p: &LegacyMatrix,
        a: &Q8Blocks,
        g: usize,
        o: &mut GroupOut,
    ) {
        // One row (decode) with a constant tile, so that its accumulators are registers.
        unsafe {
            if a.m == 1 {
                group::<LO, HI, false, 1>(p, a, g, o)
            } else {
                group::<LO, HI, false, AVX2_TILE>(p, a, g, o)
            }
        }
    }

    macro_rules! picker {
        ($name:ident, $f:ident) => {
            pub(super) fn $name(lo: u32, hi: u32) -> GroupKernel {
                // SAFETY (each closure): `Isa` saw the CPU features the kernel is
                // compiled for; it reads only group `g`'s cells and `a`'s blocks.
                match (lo, hi) {
                    (4, 0) => |p, a, g, o| unsafe { $f::<4, 0>(p, a, g, o) },
                    (4, 1) => |p, a, g, o| unsafe { $f::<4, 1>(p, a, g, o) },
                    (8, 0) => |p, a, g, o| unsafe { $f::<8, 0>(p, a, g, o) },
                    _ => LegacyMatrix::group_scalar,
                }
            }
        };
    }
    picker!(pick_vnni, vnni);
    picker!(pick_avx2, avx2);
}
