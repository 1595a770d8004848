//! The k-quant block types (256-value super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K),
//! repacked.
//!
//! Each (group of eight rows, super-block) holds the eight rows' f32 `d` and `dmin`,
//! their integer sub-block scales `sc` ([sub-blocks, 8] bytes) and minimums `m`
//! (pairs of sub-blocks, [sub-blocks / 2, 8, 2] i16, the layout `vpmaddwd` takes),
//! then eight chunks of packed values ([`crate::planes`]).
//!
//! Against a Q8_K activation block `(d_a, q_a, sums)` a row's super-block contributes
//! `d_a · (d · Σ_s sc_s Σ u·q_a − dmin · Σ_s m_s sums_s)` for the minimum types, and
//! `d_a · d · (Σ_s sc_s Σ u·q_a − off · Σ_s sc_s sums_s)` for the offset types (`m = sc`
//! is stored for them, and the offset comes out in integers, before any rounding), with
//! every sum exact in integers: llama.cpp's arithmetic for these types.

use crate::act::Q8K;
use crate::error::KernelError;
use crate::format::{BlockFormat, BlockType, Layout, Scales, decode_blocks, f16};
use crate::grouped::{GROUP, GroupOut, concat, par_groups_or_pairs, stackable};
use crate::isa::Isa;
use crate::planes::{self, CHUNK, chunk_bytes};

/// Values per super-block.
pub const QK_K: usize = 256;

/// A [rows, cols] matrix of one k-quant type, in groups of eight rows.
#[derive(Debug, Clone)]
pub struct KMatrix {
    /// The block type.
    pub ty: BlockType,
    layout: Layout,
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of 256).
    pub cols: usize,
    /// Super-blocks per row.
    nb: usize,
    /// Row groups (padding rows have zero scales).
    groups: usize,
    /// [groups, nb, 8].
    d: Vec<f32>,
    /// [groups, nb, 8].
    dmin: Vec<f32>,
    /// [groups, nb, nsub, 8].
    sc: Vec<i8>,
    /// [groups, nb, nsub / 2, 8, 2].
    m: Vec<i16>,
    /// [groups, nb, 8 chunks of `cell` bytes].
    quants: Vec<u8>,
}

impl KMatrix {
    /// Repacks GGUF super-blocks of type `F` (`rows * cols / 256`, row-major).
    pub fn from_gguf<F: BlockFormat>(
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, KernelError> {
        crate::quant::check_data(F::TYPE, rows, cols, data)?;
        let (ty, layout) = (F::TYPE, F::LAYOUT);
        let nb = cols / QK_K;
        let nsub = QK_K / layout.sub();
        let groups = rows.div_ceil(GROUP);
        let cell = chunk_bytes(layout.low_bits, layout.high_bits);
        let mut d = vec![0f32; groups * nb * GROUP];
        let mut dmin = vec![0f32; groups * nb * GROUP];
        let mut sc = vec![0i8; groups * nb * nsub * GROUP];
        let mut m = vec![0i16; groups * nb * nsub * GROUP];
        let mut quants = vec![0u8; groups * nb * 8 * cell];
        decode_blocks::<F>(rows, nb, data, |gb, lane, dec| {
            d[gb * GROUP + lane] = f16(dec.d);
            dmin[gb * GROUP + lane] = f16(dec.dmin);
            for s in 0..nsub {
                sc[(gb * nsub + s) * GROUP + lane] = dec.sc[s];
                let mv = match layout.scales {
                    Scales::SubOffset { .. } => dec.sc[s],
                    _ => dec.m[s],
                };
                m[((gb * nsub / 2 + s / 2) * GROUP + lane) * 2 + s % 2] = mv as i16;
            }
            for (c, values) in dec.u.chunks_exact(CHUNK).enumerate() {
                let at = (gb * 8 + c) * cell;
                planes::put_row(
                    &mut quants[at..at + cell],
                    layout.low_bits,
                    layout.high_bits,
                    lane,
                    values,
                );
            }
        });
        Ok(Self {
            ty,
            layout,
            rows,
            cols,
            nb,
            groups,
            d,
            dmin,
            sc,
            m,
            quants,
        })
    }

    fn cell(&self) -> usize {
        chunk_bytes(self.layout.low_bits, self.layout.high_bits)
    }

    fn nsub(&self) -> usize {
        QK_K / self.layout.sub()
    }

    /// Stacks matrices of one type and width (rows of `parts[0]` first); `None` when
    /// they differ or a part but the last has rows that are not a multiple of eight.
    pub fn concat_rows(parts: &[&KMatrix]) -> Option<KMatrix> {
        if !stackable(parts.iter().map(|p| (p.ty, p.rows, p.cols))) {
            return None;
        }
        Some(KMatrix {
            ty: parts[0].ty,
            layout: parts[0].layout,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: parts[0].cols,
            nb: parts[0].nb,
            groups: parts.iter().map(|p| p.groups).sum(),
            d: concat(parts, |p| &p.d),
            dmin: concat(parts, |p| &p.dmin),
            sc: concat(parts, |p| &p.sc),
            m: concat(parts, |p| &p.m),
            quants: concat(parts, |p| &p.quants),
        })
    }

    /// Stored value `e` (< 256) of super-block `b` of row `r`.
    #[inline]
    fn stored(&self, r: usize, b: usize, e: usize) -> i32 {
        let (g, lane) = (r / GROUP, r % GROUP);
        let cell = self.cell();
        let at = ((g * self.nb + b) * 8 + e / CHUNK) * cell;
        let chunk = &self.quants[at..at + cell];
        planes::get(
            chunk,
            self.layout.low_bits,
            self.layout.high_bits,
            lane,
            e % CHUNK,
        ) as i32
    }

    #[inline]
    fn at(&self, r: usize, b: usize) -> usize {
        ((r / GROUP) * self.nb + b) * GROUP + r % GROUP
    }

    #[inline]
    fn scale(&self, r: usize, b: usize, s: usize) -> i32 {
        let nsub = self.nsub();
        self.sc[(((r / GROUP) * self.nb + b) * nsub + s) * GROUP + r % GROUP] as i32
    }

    #[inline]
    fn minimum(&self, r: usize, b: usize, s: usize) -> i32 {
        let nsub = self.nsub();
        let gb = (r / GROUP) * self.nb + b;
        self.m[((gb * nsub / 2 + s / 2) * GROUP + r % GROUP) * 2 + s % 2] as i32
    }

    /// Dequantizes row `r` into `out` (len cols), as ggml does.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let sub = self.layout.sub();
        for b in 0..self.nb {
            let at = self.at(r, b);
            let (d, dmin) = (self.d[at], self.dmin[at]);
            for (e, o) in out[b * QK_K..(b + 1) * QK_K].iter_mut().enumerate() {
                let s = e / sub;
                let dl = d * self.scale(r, b, s) as f32;
                let u = self.stored(r, b, e);
                *o = match self.layout.scales {
                    Scales::SubOffset { offset, .. } => dl * (u - offset) as f32,
                    _ => dl * u as f32 - dmin * self.minimum(r, b, s) as f32,
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
        let act = &Q8K::quantize(x, m, self.nb, self.layout.sub());
        let kernel = self.kernel(isa);
        let min_groups = 512 / (self.nb * m).max(1);
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
            return x86::pick_vnni_pair(
                self.layout.low_bits,
                self.layout.high_bits,
                self.layout.sub(),
            );
        }
        let _ = (isa, m);
        None
    }

    fn kernel(&self, isa: Isa) -> GroupKernel {
        #[cfg(target_arch = "x86_64")]
        {
            let (lo, hi, sub) = (
                self.layout.low_bits,
                self.layout.high_bits,
                self.layout.sub(),
            );
            match isa {
                Isa::Scalar => {}
                Isa::Avx2 => return x86::pick_avx2(lo, hi, sub),
                Isa::Vnni => return x86::pick_vnni(lo, hi, sub),
            }
        }
        let _ = isa;
        Self::group_scalar
    }

    /// One group's rows for every activation row, scalar (the reference for the SIMD
    /// kernels, and the path on CPUs without them).
    fn group_scalar(&self, act: &Q8K, g: usize, out: &mut GroupOut) {
        let (m, sub, nsub) = (act.m, self.layout.sub(), self.nsub());
        for lane in 0..out.lanes {
            let r = g * GROUP + lane;
            for i in 0..m {
                let mut sum = 0f32;
                for b in 0..self.nb {
                    let blk = i * self.nb + b;
                    let a = &act.qs[blk * QK_K..][..QK_K];
                    let (mut sumi, mut summ) = (0i32, 0i32);
                    for s in 0..nsub {
                        let dot: i32 = (s * sub..(s + 1) * sub)
                            .map(|e| self.stored(r, b, e) * a[e] as i32)
                            .sum();
                        sumi += self.scale(r, b, s) * dot;
                        summ += self.minimum(r, b, s) * act.sums[blk * nsub + s] as i32;
                    }
                    let at = self.at(r, b);
                    let da = act.d[blk];
                    let offset = self.layout.offset();
                    if offset != 0 {
                        sum += (sumi - offset * summ) as f32 * (self.d[at] * da);
                    } else {
                        sum += sumi as f32 * (self.d[at] * da);
                        sum -= summ as f32 * (self.dmin[at] * da);
                    }
                }
                out.set(i, lane, sum);
            }
        }
    }
}

/// A kernel for one group: `(matrix, activations, group, out [rows of the group, m])`.
type GroupKernel = fn(&KMatrix, &Q8K, usize, &mut GroupOut);

/// A kernel for groups `g` and `g + 1`, with an output each.
type PairKernel = fn(&KMatrix, &Q8K, usize, &mut GroupOut, &mut GroupOut);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, GroupKernel, GroupOut, KMatrix, PairKernel, QK_K};
    use crate::act::Q8K;
    use crate::legacy::x86::{
        AVX2_TILE, dot, join, maddubs_run, prefetch, store_pair, words_in_i16,
    };
    use crate::planes::x86::unpack;
    use crate::planes::{CHUNK, chunk_bytes};

    /// The eight rows' i8 scales at `at` as sixteen i16, each row's twice (the two
    /// halves of its 32-bit lane), the operand `vpmaddwd` scales pair sums by.
    #[inline(always)]
    unsafe fn scale_pairs(at: *const i8) -> __m256i {
        unsafe {
            let v = _mm_loadl_epi64(at as *const __m128i);
            _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(v, v))
        }
    }

    /// For each tile of `T` activation rows, walks the group's super-blocks; each chunk
    /// of eight weight words is unpacked once and dotted with every row of the tile.
    // Register arrays are indexed by tile row and word on purpose.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn group<
        const LO: u32,
        const HI: u32,
        const SUB: usize,
        const VNNI: bool,
        const T: usize,
    >(
        p: &KMatrix,
        act: &Q8K,
        g: usize,
        out: &mut GroupOut,
    ) {
        unsafe {
            let (nb, m) = (p.nb, act.m);
            let nsub = QK_K / SUB;
            let offset = p.layout.offset();
            let cell = chunk_bytes(LO, HI);
            let dp = p.d.as_ptr().add(g * nb * GROUP);
            let dminp = p.dmin.as_ptr().add(g * nb * GROUP);
            let scp = p.sc.as_ptr().add(g * nb * nsub * GROUP);
            let mp = p.m.as_ptr().add(g * nb * nsub * GROUP);
            let qp = p.quants.as_ptr().add(g * nb * 8 * cell);
            let mut i0 = 0;
            while i0 < m {
                let tile = (m - i0).min(T);
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..nb {
                    let mut sumi = [_mm256_setzero_si256(); T];
                    for c in 0..8 {
                        let ch = qp.add((b * 8 + c) * cell);
                        prefetch(ch, cell);
                        let w = unpack::<LO, HI>(ch);
                        let sc_at = scp.add((b * nsub + c * (CHUNK / SUB)) * GROUP);
                        // The sub-block scales of the chunk's two halves: i32 lanes for
                        // `vpmulld` (VNNI), or on AVX2 i16 pairs, so that one `vpmaddwd`
                        // widens the 16-bit product sums and scales them.
                        let load = |at: *const i8| {
                            if VNNI {
                                _mm256_cvtepi8_epi32(_mm_loadl_epi64(at as *const __m128i))
                            } else {
                                scale_pairs(at)
                            }
                        };
                        let sc0 = load(sc_at);
                        let sc1 = if SUB == 16 {
                            load(sc_at.add(GROUP))
                        } else {
                            sc0
                        };
                        for t in 0..tile {
                            let blk = (i0 + t) * nb + b;
                            let a = act.qs.as_ptr().add(blk * QK_K + c * CHUNK) as *const i32;
                            if !VNNI {
                                // Runs of words summed in 16 bits, none straddling a sub-block.
                                let run = words_in_i16(LO + HI).min(SUB / 4);
                                for from in (0..8).step_by(run) {
                                    let scale = if from < 4 { sc0 } else { sc1 };
                                    let p = maddubs_run(&w, a, from, run);
                                    sumi[t] =
                                        _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scale));
                                }
                                continue;
                            }
                            let mut s = [_mm256_setzero_si256(); 4];
                            for k in 0..8 {
                                let ak = _mm256_set1_epi32(a.add(k).read_unaligned());
                                let j = k % 2 + 2 * (k / 4);
                                s[j] = dot::<VNNI, false>(s[j], w[k], ak);
                            }
                            let [s0, s1, s2, s3] = s;
                            let (lo, hi) = (_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3));
                            sumi[t] = if SUB == 16 {
                                _mm256_add_epi32(
                                    sumi[t],
                                    _mm256_add_epi32(
                                        _mm256_mullo_epi32(lo, sc0),
                                        _mm256_mullo_epi32(hi, sc1),
                                    ),
                                )
                            } else {
                                _mm256_add_epi32(
                                    sumi[t],
                                    _mm256_mullo_epi32(_mm256_add_epi32(lo, hi), sc0),
                                )
                            };
                        }
                    }
                    let d8 = _mm256_loadu_ps(dp.add(b * GROUP));
                    let dmin8 = _mm256_loadu_ps(dminp.add(b * GROUP));
                    let m_at = mp.add(b * nsub * GROUP);
                    for t in 0..tile {
                        let blk = (i0 + t) * nb + b;
                        let sums = act.sums.as_ptr().add(blk * nsub) as *const i32;
                        let mut summ = _mm256_setzero_si256();
                        for j in 0..nsub / 2 {
                            let mins =
                                _mm256_loadu_si256(m_at.add(j * 2 * GROUP) as *const __m256i);
                            let pair = _mm256_set1_epi32(sums.add(j).read_unaligned());
                            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mins, pair));
                        }
                        let da = _mm256_set1_ps(*act.d.get_unchecked(blk));
                        if offset != 0 {
                            let off = _mm256_mullo_epi32(summ, _mm256_set1_epi32(offset));
                            let s = _mm256_sub_epi32(sumi[t], off);
                            acc[t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(s),
                                _mm256_mul_ps(d8, da),
                                acc[t],
                            );
                        } else {
                            let dm = _mm256_mul_ps(dmin8, da);
                            acc[t] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(sumi[t]),
                                _mm256_mul_ps(d8, da),
                                acc[t],
                            );
                            acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), dm, acc[t]);
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

    /// [`group`] for two groups at once (`g` and `g + 1`) on 512-bit registers: each
    /// word of the two groups' chunks becomes one register of sixteen rows. The same
    /// integer sums and the same f32 operations per output as [`group`].
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn group_pair<const LO: u32, const HI: u32, const SUB: usize, const T: usize>(
        p: &KMatrix,
        act: &Q8K,
        g: usize,
        out0: &mut GroupOut,
        out1: &mut GroupOut,
    ) {
        unsafe {
            let (nb, m) = (p.nb, act.m);
            let nsub = QK_K / SUB;
            let offset = p.layout.offset();
            let cell = chunk_bytes(LO, HI);
            // Group g + 1's data follows group g's in each array.
            let (dn, sn, qn) = (nb * GROUP, nb * nsub * GROUP, nb * 8 * cell);
            let dp = p.d.as_ptr().add(g * dn);
            let dminp = p.dmin.as_ptr().add(g * dn);
            let scp = p.sc.as_ptr().add(g * sn);
            let mp = p.m.as_ptr().add(g * sn);
            let qp = p.quants.as_ptr().add(g * qn);
            // Eight i8 scales of each group, widened to sixteen i32.
            let scales = |at: *const i8| {
                let a = _mm_loadl_epi64(at as *const __m128i);
                let b = _mm_loadl_epi64(at.add(sn) as *const __m128i);
                _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(a, b))
            };
            let floats = |at: *const f32| {
                let a = _mm256_castps_pd(_mm256_loadu_ps(at));
                let b = _mm256_castps_pd(_mm256_loadu_ps(at.add(dn)));
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(a), b))
            };
            let mut i0 = 0;
            while i0 < m {
                let tile = (m - i0).min(T);
                let mut acc = [_mm512_setzero_ps(); T];
                for b in 0..nb {
                    let mut sumi = [_mm512_setzero_si512(); T];
                    for c in 0..8 {
                        let ch0 = qp.add((b * 8 + c) * cell);
                        let ch1 = ch0.add(qn);
                        prefetch(ch0, cell);
                        prefetch(ch1, cell);
                        let (w0, w1) = (unpack::<LO, HI>(ch0), unpack::<LO, HI>(ch1));
                        let w: [__m512i; 8] = std::array::from_fn(|k| join(w0[k], w1[k]));
                        let sc_at = scp.add((b * nsub + c * (CHUNK / SUB)) * GROUP);
                        let sc0 = scales(sc_at);
                        let sc1 = if SUB == 16 {
                            scales(sc_at.add(GROUP))
                        } else {
                            sc0
                        };
                        for t in 0..tile {
                            let blk = (i0 + t) * nb + b;
                            let a = act.qs.as_ptr().add(blk * QK_K + c * CHUNK) as *const i32;
                            let mut s = [_mm512_setzero_si512(); 4];
                            for k in 0..8 {
                                let ak = _mm512_set1_epi32(a.add(k).read_unaligned());
                                let j = k % 2 + 2 * (k / 4);
                                s[j] = _mm512_dpbusd_epi32(s[j], w[k], ak);
                            }
                            let [s0, s1, s2, s3] = s;
                            let (lo, hi) = (_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
                            sumi[t] = if SUB == 16 {
                                _mm512_add_epi32(
                                    sumi[t],
                                    _mm512_add_epi32(
                                        _mm512_mullo_epi32(lo, sc0),
                                        _mm512_mullo_epi32(hi, sc1),
                                    ),
                                )
                            } else {
                                _mm512_add_epi32(
                                    sumi[t],
                                    _mm512_mullo_epi32(_mm512_add_epi32(lo, hi), sc0),
                                )
                            };
                        }
                    }
                    let d16 = floats(dp.add(b * GROUP));
                    let dmin16 = floats(dminp.add(b * GROUP));
                    let m_at = mp.add(b * nsub * GROUP);
                    for t in 0..tile {
                        let blk = (i0 + t) * nb + b;
                        let sums = act.sums.as_ptr().add(blk * nsub) as *const i32;
                        let mut summ = _mm512_setzero_si512();
                        for j in 0..nsub / 2 {
                            let at = m_at.add(j * 2 * GROUP);
                            let mins = join(
                                _mm256_loadu_si256(at as *const __m256i),
                                _mm256_loadu_si256(at.add(sn) as *const __m256i),
                            );
                            let pair = _mm512_set1_epi32(sums.add(j).read_unaligned());
                            summ = _mm512_add_epi32(summ, _mm512_madd_epi16(mins, pair));
                        }
                        let da = _mm512_set1_ps(*act.d.get_unchecked(blk));
                        if offset != 0 {
                            let off = _mm512_mullo_epi32(summ, _mm512_set1_epi32(offset));
                            let s = _mm512_sub_epi32(sumi[t], off);
                            acc[t] = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(s),
                                _mm512_mul_ps(d16, da),
                                acc[t],
                            );
                        } else {
                            let dm = _mm512_mul_ps(dmin16, da);
                            acc[t] = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(sumi[t]),
                                _mm512_mul_ps(d16, da),
                                acc[t],
                            );
                            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), dm, acc[t]);
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
    unsafe fn vnni_pair<const LO: u32, const HI: u32, const SUB: usize>(
        p: &KMatrix,
        a: &Q8K,
        g: usize,
        o0: &mut GroupOut,
        o1: &mut GroupOut,
    ) {
        unsafe { group_pair::<LO, HI, SUB, 8>(p, a, g, o0, o1) }
    }

    /// The two-group kernel for a layout, where there is one.
    pub(super) fn pick_vnni_pair(lo: u32, hi: u32, sub: usize) -> Option<PairKernel> {
        // SAFETY (each closure): as in `picker!`; it reads groups `g` and `g + 1`,
        // which `par_group_pairs` hands over only when both exist.
        match (lo, hi, sub) {
            (2, 0, 16) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<2, 0, 16>(p, a, g, o0, o1) }),
            (2, 1, 16) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<2, 1, 16>(p, a, g, o0, o1) }),
            (4, 0, 32) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<4, 0, 32>(p, a, g, o0, o1) }),
            (4, 1, 32) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<4, 1, 32>(p, a, g, o0, o1) }),
            (4, 2, 16) => Some(|p, a, g, o0, o1| unsafe { vnni_pair::<4, 2, 16>(p, a, g, o0, o1) }),
            _ => None,
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn vnni<const LO: u32, const HI: u32, const SUB: usize>(
        p: &KMatrix,
        a: &Q8K,
        g: usize,
        o: &mut GroupOut,
    ) {
        unsafe { group::<LO, HI, SUB, true, 8>(p, a, g, o) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2<const LO: u32, const HI: u32, const SUB: usize>(
        p: &KMatrix,
        a: &Q8K,
        g: usize,
        o: &mut GroupOut,
    ) {
        // One row (decode) with a constant tile, so that its accumulators are registers.
        unsafe {
            if a.m == 1 {
                group::<LO, HI, SUB, false, 1>(p, a, g, o)
            } else {
                group::<LO, HI, SUB, false, AVX2_TILE>(p, a, g, o)
            }
        }
    }

    macro_rules! picker {
        ($name:ident, $f:ident) => {
            pub(super) fn $name(lo: u32, hi: u32, sub: usize) -> GroupKernel {
                // SAFETY (each closure): `Isa` saw the CPU features the kernel is
                // compiled for; it reads only group `g`'s cells and `a`'s blocks.
                match (lo, hi, sub) {
                    (2, 0, 16) => |p, a, g, o| unsafe { $f::<2, 0, 16>(p, a, g, o) },
                    (2, 1, 16) => |p, a, g, o| unsafe { $f::<2, 1, 16>(p, a, g, o) },
                    (4, 0, 32) => |p, a, g, o| unsafe { $f::<4, 0, 32>(p, a, g, o) },
                    (4, 1, 32) => |p, a, g, o| unsafe { $f::<4, 1, 32>(p, a, g, o) },
                    (4, 2, 16) => |p, a, g, o| unsafe { $f::<4, 2, 16>(p, a, g, o) },
                    _ => KMatrix::group_scalar,
                }
            }
        };
    }
    picker!(pick_vnni, vnni);
    picker!(pick_avx2, avx2);
}
