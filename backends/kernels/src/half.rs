//! CPU kernels for half-precision weights (bf16 / f16) times f32 activations.
//!
//! Weights stay 16-bit (half the memory traffic of f32) and are widened to f32 in
//! registers; products are accumulated in f32. Widening is exact, so this computes the
//! same function as an f32 model built from the same stored weights (up to summation
//! order), which is what the references use.
//!
//! Decode is a matrix-vector product bound by how fast weights stream from memory, so
//! the layout is chosen for streaming: rows are interleaved in groups of eight, and one
//! register holds the eight rows' weights at one input position. Each step is then one
//! load, a widening, a broadcast of one activation and one FMA into an accumulator
//! whose eight lanes are the eight outputs, over a single sequential stream (reading
//! short rows one by one, as a plain layout does, leaves the hardware prefetcher
//! restarting on every row). bf16 pairs two positions in each 32-bit lane, so a shift
//! and a mask widen sixteen weights; f16 uses `vcvtph2ps`.
//!
//! Prefill reads each group's weights once per tile of activation rows (four with
//! AVX2, eight with AVX-512, whose sixteen lanes hold two positions of the eight rows:
//! bf16's pair layout, and f16 permuted into it after widening). Every kernel gives a
//! row's sum one order whatever the number of rows, so decoding token by token gives
//! the bits of one prefill.
//!
//! The kernels are picked at run time by [`Isa`] (AVX-512, AVX2 + FMA + F16C, or the
//! scalar loop).

use crate::grouped::{GROUP, GroupOut, concat, par_groups_or_pairs, stackable};
use crate::isa::Isa;

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
            HalfKind::Bf16 => ::half::bf16::from_bits(bits).to_f32(),
            HalfKind::F16 => ::half::f16::from_bits(bits).to_f32(),
        }
    }

    /// Rounds an f32 to this format.
    #[inline]
    pub fn from_f32(self, v: f32) -> u16 {
        match self {
            HalfKind::Bf16 => ::half::bf16::from_f32(v).to_bits(),
            HalfKind::F16 => ::half::f16::from_f32(v).to_bits(),
        }
    }
}

/// A [rows, cols] bf16/f16 matrix, rows interleaved in groups of eight.
#[derive(Debug)]
pub struct PackedHalf {
    /// bf16 or f16.
    pub kind: HalfKind,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Row groups (padding rows are zero).
    groups: usize,
    /// bf16: [groups, cols / 2 rounded up, 8, 2] (each 32-bit lane holds positions
    /// 2p and 2p + 1 of one row). f16: [groups, cols, 8].
    data: Vec<u16>,
}

impl PackedHalf {
    /// Repacks a row-major [rows, cols] matrix of 16-bit values.
    pub fn new(kind: HalfKind, rows: usize, cols: usize, values: &[u16]) -> Option<Self> {
        if values.len() != rows * cols {
            return None;
        }
        let groups = rows.div_ceil(GROUP);
        let mut p = Self {
            kind,
            rows,
            cols,
            groups,
            data: Vec::new(),
        };
        p.data = vec![0u16; groups * p.group_len()];
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
            for (c, v) in row.iter().enumerate() {
                let i = p.index(r, c);
                p.data[i] = *v;
            }
        }
        Some(p)
    }

    /// Values per group.
    fn group_len(&self) -> usize {
        match self.kind {
            HalfKind::Bf16 => self.cols.div_ceil(2) * 2 * GROUP,
            HalfKind::F16 => self.cols * GROUP,
        }
    }

    /// Where element (r, c) is stored.
    #[inline]
    fn index(&self, r: usize, c: usize) -> usize {
        let (g, lane) = (r / GROUP, r % GROUP);
        let base = g * self.group_len();
        match self.kind {
            HalfKind::Bf16 => base + ((c / 2) * GROUP + lane) * 2 + c % 2,
            HalfKind::F16 => base + c * GROUP + lane,
        }
    }

    /// Row `r` widened into `out` (len cols).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate().take(self.cols) {
            *o = self.kind.to_f32(self.data[self.index(r, c)]);
        }
    }

    /// Stacks matrices of one kind and width (rows of `parts[0]` first); `None` when
    /// they differ or a part other than the last has rows that are not a multiple of 8.
    pub fn concat_rows(parts: &[&PackedHalf]) -> Option<PackedHalf> {
        if !stackable(parts.iter().map(|p| (p.kind, p.rows, p.cols))) {
            return None;
        }
        Some(PackedHalf {
            kind: parts[0].kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: parts[0].cols,
            groups: parts.iter().map(|p| p.groups).sum(),
            data: concat(parts, |p| &p.data),
        })
    }

    /// `out[i * rows + j] = Σ_k x[i, k] · W[j, k]` for `x` [m, cols] row-major. Each
    /// weight is read once per tile of activation rows.
    ///
    /// Every kernel sums row `i` of the output in the same order whatever `m` is, so a
    /// prompt's rows computed together give the bits they give one at a time (decode
    /// and prefill agree exactly).
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
        let min_groups = 8192 / (self.cols * m).max(1);
        // AVX2 prefill of f16: two groups (sixteen rows) per activation broadcast. Not
        // bf16, whose pair layout takes a shift or a mask per position: there the
        // one-group tile measured faster.
        #[cfg(target_arch = "x86_64")]
        let pair = (isa == Isa::Avx2 && m > 1 && self.kind == HalfKind::F16).then_some(
            |g, o0: &mut GroupOut, o1: &mut GroupOut| {
                // SAFETY: `Isa` saw AVX2 + FMA + F16C; it reads groups `g` and `g + 1`
                // (both exist when a pair is handed over) and `x`'s m rows only.
                unsafe { x86::group_pair(self, x, m, g, o0, o1) }
            },
        );
        #[cfg(not(target_arch = "x86_64"))]
        let pair: Option<fn(usize, &mut GroupOut, &mut GroupOut)> = None;
        par_groups_or_pairs(
            out,
            self.rows,
            m,
            min_groups,
            |g, o| self.group(isa, x, m, g, o),
            pair,
        );
    }

    fn group(&self, isa: Isa, x: &[f32], m: usize, g: usize, out: &mut GroupOut) {
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Scalar => {}
            // SAFETY (both): `Isa` saw the features the kernel is compiled for; it reads
            // group `g`'s values and `x`'s m rows of `cols` values only.
            Isa::Avx2 => return unsafe { x86::group(self, x, m, g, out) },
            Isa::Vnni => return unsafe { x86::group512(self, x, m, g, out) },
        }
        let _ = isa;
        self.group_scalar(x, m, g, out);
    }

    fn group_scalar(&self, x: &[f32], m: usize, g: usize, out: &mut GroupOut) {
        for lane in 0..out.lanes {
            let r = g * GROUP + lane;
            for i in 0..m {
                let xi = &x[i * self.cols..(i + 1) * self.cols];
                let sum = xi
                    .iter()
                    .enumerate()
                    .map(|(c, v)| v * self.kind.to_f32(self.data[self.index(r, c)]))
                    .sum();
                out.set(i, lane, sum);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, GroupOut, HalfKind, PackedHalf};
    use crate::legacy::x86::PREFETCH_AHEAD;

    /// Weights of the group's eight rows at positions `c..c + 4` (c even).
    #[inline(always)]
    unsafe fn load4(p: *const u16, kind: HalfKind, c: usize) -> [__m256; 4] {
        unsafe {
            match kind {
                HalfKind::Bf16 => {
                    let hi_mask = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
                    let v0 = _mm256_loadu_si256(p.add(c * GROUP) as *const __m256i);
                    let v1 = _mm256_loadu_si256(p.add((c + 2) * GROUP) as *const __m256i);
                    [
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v0)),
                        _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask)),
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v1)),
                        _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask)),
                    ]
                }
                HalfKind::F16 => std::array::from_fn(|j| {
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add((c + j) * GROUP) as *const __m128i))
                }),
            }
        }
    }

    /// Weights of the group's eight rows at position `c` alone.
    #[inline(always)]
    unsafe fn load1(p: *const u16, kind: HalfKind, c: usize) -> __m256 {
        unsafe {
            match kind {
                HalfKind::Bf16 => {
                    let v = _mm256_loadu_si256(p.add((c - c % 2) * GROUP) as *const __m256i);
                    if c.is_multiple_of(2) {
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
                    } else {
                        _mm256_castsi256_ps(_mm256_and_si256(
                            v,
                            _mm256_set1_epi32(0xFFFF_0000u32 as i32),
                        ))
                    }
                }
                HalfKind::F16 => {
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(c * GROUP) as *const __m128i))
                }
            }
        }
    }

    /// Rows `i0..i0 + T` of `x` times the eight rows of each of `N` consecutive groups
    /// from `g` (one output each), with two accumulators per activation row and group
    /// (even and odd positions), summed in the same order for every `T` and `N`.
    ///
    /// One group loads four positions' weights at once. Two groups (f16 prefill) load
    /// a position of both and feed each broadcast activation to sixteen rows, so a
    /// prompt's rows need fewer loads per FMA; `kind` is then a constant, so that no
    /// load branches on it.
    // Register arrays are indexed by tile row and group on purpose.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const T: usize, const N: usize>(
        w: &PackedHalf,
        kind: HalfKind,
        x: &[f32],
        g: usize,
        i0: usize,
        outs: [&mut GroupOut; N],
    ) {
        unsafe {
            let cols = w.cols;
            let ps: [*const u16; N] =
                std::array::from_fn(|n| w.data.as_ptr().add((g + n) * w.group_len()));
            let xs: [*const f32; T] = std::array::from_fn(|t| x.as_ptr().add((i0 + t) * cols));
            // [row][group][position parity]
            let mut acc = [[[_mm256_setzero_ps(); 2]; N]; T];
            let c4 = cols - cols % 4;
            let mut c = 0;
            while c < c4 {
                for p in ps {
                    _mm_prefetch::<_MM_HINT_T0>(
                        (p.add(c * GROUP) as *const i8).wrapping_add(PREFETCH_AHEAD),
                    );
                }
                if N == 1 {
                    let wv = load4(ps[0], kind, c);
                    for t in 0..T {
                        for (j, wj) in wv.iter().enumerate() {
                            let xv = _mm256_broadcast_ss(&*xs[t].add(c + j));
                            acc[t][0][j % 2] = _mm256_fmadd_ps(*wj, xv, acc[t][0][j % 2]);
                        }
                    }
                } else {
                    for j in 0..4 {
                        let wn: [__m256; N] = std::array::from_fn(|n| load1(ps[n], kind, c + j));
                        for t in 0..T {
                            let xv = _mm256_broadcast_ss(&*xs[t].add(c + j));
                            for n in 0..N {
                                acc[t][n][j % 2] = _mm256_fmadd_ps(wn[n], xv, acc[t][n][j % 2]);
                            }
                        }
                    }
                }
                c += 4;
            }
            while c < cols {
                let wn: [__m256; N] = std::array::from_fn(|n| load1(ps[n], kind, c));
                for t in 0..T {
                    let xv = _mm256_broadcast_ss(&*xs[t].add(c));
                    for n in 0..N {
                        acc[t][n][0] = _mm256_fmadd_ps(wn[n], xv, acc[t][n][0]);
                    }
                }
                c += 1;
            }
            store_chains(&acc, outs, i0);
        }
    }

    /// Stores tile rows `i0..i0 + T` of `N` groups, each the sum of its two chains.
    #[inline(always)]
    pub(crate) unsafe fn store_chains<const T: usize, const N: usize>(
        acc: &[[[__m256; 2]; N]; T],
        outs: [&mut GroupOut; N],
        i0: usize,
    ) {
        for (o, n) in outs.into_iter().zip(0..N) {
            for (t, row) in acc.iter().enumerate() {
                let mut v = [0f32; GROUP];
                // SAFETY: `v` holds eight f32; the caller has AVX.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr(), _mm256_add_ps(row[n][0], row[n][1])) };
                o.store(i0 + t, &v);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn group(w: &PackedHalf, x: &[f32], m: usize, g: usize, out: &mut GroupOut) {
        unsafe {
            // Four activation rows share each weight load (eight accumulators, four
            // weight registers: within AVX2's sixteen); leftover rows go one by one
            // with the same two chains per row (even and odd positions), so each
            // row's sum has one order whatever `m` is.
            let mut i0 = 0;
            while i0 + 4 <= m {
                tile::<4, 1>(w, w.kind, x, g, i0, [&mut *out]);
                i0 += 4;
            }
            while i0 < m {
                tile::<1, 1>(w, w.kind, x, g, i0, [&mut *out]);
                i0 += 1;
            }
        }
    }

    /// Groups `g` and `g + 1` of an f16 matrix for every activation row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn group_pair(
        w: &PackedHalf,
        x: &[f32],
        m: usize,
        g: usize,
        out0: &mut GroupOut,
        out1: &mut GroupOut,
    ) {
        unsafe {
            // Three activation rows share each pair of weight loads: twelve
            // accumulators, two weight registers and a broadcast, within AVX2's sixteen.
            let mut i0 = 0;
            while i0 + 3 <= m {
                tile::<3, 2>(w, HalfKind::F16, x, g, i0, [&mut *out0, &mut *out1]);
                i0 += 3;
            }
            while i0 < m {
                tile::<1, 2>(w, HalfKind::F16, x, g, i0, [&mut *out0, &mut *out1]);
                i0 += 1;
            }
        }
    }

    /// Lane `l` of the widened f16 pair takes lane `(l % 2) · 8 + l / 2`: from
    /// [position][row] to [row][position], the bf16 order.
    const F16_TO_ROW_PAIRS: [i32; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];

    /// Weights of the group's eight rows at positions `c`, `c + 1` (`c` even) in
    /// sixteen lanes, [row][position]; `F16` says which half (`order`: the lanes of
    /// [`F16_TO_ROW_PAIRS`]).
    #[inline(always)]
    unsafe fn load_pair512<const F16: bool>(p: *const u16, c: usize, order: __m512i) -> __m512 {
        unsafe {
            // Both layouts keep the pair's sixteen values together from `c · 8`.
            let v = _mm256_loadu_si256(p.add(c * GROUP) as *const __m256i);
            if F16 {
                _mm512_permutexvar_ps(order, _mm512_cvtph_ps(v))
            } else {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
            }
        }
    }

    /// `x[c]`, `x[c + 1]` in every pair of lanes.
    #[inline(always)]
    unsafe fn pair512(x: *const f32) -> __m512 {
        unsafe {
            let bits = (x as *const u64).read_unaligned();
            _mm512_castpd_ps(_mm512_set1_pd(f64::from_bits(bits)))
        }
    }

    /// [`tile`] in sixteen-lane registers: lanes are (row, position parity), and each
    /// row has two chains (alternate position pairs), so every `T` gives the same
    /// bits for a row.
    #[inline(always)]
    unsafe fn tile512<const T: usize, const F16: bool>(
        w: &PackedHalf,
        x: &[f32],
        g: usize,
        i0: usize,
        out: &mut GroupOut,
    ) {
        unsafe {
            let cols = w.cols;
            let p = w.data.as_ptr().add(g * w.group_len());
            let xs: [*const f32; T] = std::array::from_fn(|t| x.as_ptr().add((i0 + t) * cols));
            let order = _mm512_loadu_si512(F16_TO_ROW_PAIRS.as_ptr() as *const _);
            let mut acc = [[_mm512_setzero_ps(); 2]; T];
            let c4 = cols - cols % 4;
            let mut c = 0;
            while c < c4 {
                // Four positions of eight rows are one cache line: fetch the line
                // PREFETCH_AHEAD bytes on (decode streams the weights from memory).
                _mm_prefetch::<_MM_HINT_T0>(
                    (p.add(c * GROUP) as *const i8).wrapping_add(PREFETCH_AHEAD),
                );
                let w0 = load_pair512::<F16>(p, c, order);
                let w1 = load_pair512::<F16>(p, c + 2, order);
                for (t, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm512_fmadd_ps(w0, pair512(xs[t].add(c)), a[0]);
                    a[1] = _mm512_fmadd_ps(w1, pair512(xs[t].add(c + 2)), a[1]);
                }
                c += 4;
            }
            if cols - c >= 2 {
                let w0 = load_pair512::<F16>(p, c, order);
                for (t, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm512_fmadd_ps(w0, pair512(xs[t].add(c)), a[0]);
                }
                c += 2;
            }
            for (t, a) in acc.iter().enumerate() {
                let s = _mm512_add_ps(a[0], a[1]);
                // Each row's two positions: swap neighbours and add.
                let s = _mm512_add_ps(s, _mm512_permute_ps::<0b10_11_00_01>(s));
                let mut lanes = [0f32; 16];
                _mm512_storeu_ps(lanes.as_mut_ptr(), s);
                let mut v: [f32; GROUP] = std::array::from_fn(|r| lanes[2 * r]);
                if c < cols {
                    // An odd width's last position.
                    let xc = *xs[t].add(c);
                    for (r, o) in v.iter_mut().enumerate() {
                        let wv = w
                            .kind
                            .to_f32(*w.data.get_unchecked(w.index(g * GROUP + r, c)));
                        *o = wv.mul_add(xc, *o);
                    }
                }
                out.store(i0 + t, &v);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn group512(
        w: &PackedHalf,
        x: &[f32],
        m: usize,
        g: usize,
        out: &mut GroupOut,
    ) {
        unsafe {
            // Eight activation rows share each weight load: sixteen accumulators and
            // two weight registers of AVX-512's 32.
            match w.kind {
                HalfKind::F16 => rows512::<true>(w, x, m, g, out),
                HalfKind::Bf16 => rows512::<false>(w, x, m, g, out),
            }
        }
    }

    /// [`group512`] for one kind of half.
    #[inline(always)]
    unsafe fn rows512<const F16: bool>(
        w: &PackedHalf,
        x: &[f32],
        m: usize,
        g: usize,
        out: &mut GroupOut,
    ) {
        unsafe {
            let mut i0 = 0;
            while i0 + 8 <= m {
                tile512::<8, F16>(w, x, g, i0, out);
                i0 += 8;
            }
            while i0 < m {
                tile512::<1, F16>(w, x, g, i0, out);
                i0 += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouped::par_groups;

    #[test]
    fn packed_rows_read_back_and_multiply_like_the_plain_matrix() {
        for (m, k, n) in [
            (3, 37, 70),
            (1, 64, 16),
            (5, 8, 9),
            (2, 1, 3),
            (19, 42, 17),
            (9, 3, 8),
            (17, 6, 9),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            for kind in [HalfKind::Bf16, HalfKind::F16] {
                let w: Vec<u16> = (0..n * k)
                    .map(|i| kind.from_f32(((i * 11 % 17) as f32 - 8.0) / 9.0))
                    .collect();
                let p = PackedHalf::new(kind, n, k, &w).expect("sizes match");
                let mut row = vec![0f32; k];
                for j in 0..n {
                    p.row_f32(j, &mut row);
                    let want: Vec<f32> = w[j * k..(j + 1) * k]
                        .iter()
                        .map(|b| kind.to_f32(*b))
                        .collect();
                    assert_eq!(row, want, "{kind:?} row {j}");
                }
                let mut scalar = vec![0f32; n * m];
                par_groups(&mut scalar, n, m, 1, |g, o| p.group_scalar(&x, m, g, o));
                let want = |i: usize, j: usize| -> f32 {
                    (0..k)
                        .map(|c| x[i * k + c] * kind.to_f32(w[j * k + c]))
                        .sum()
                };
                for (j, v) in scalar.iter().enumerate() {
                    assert!(
                        (v - want(j / n, j % n)).abs() < 1e-4,
                        "scalar {kind:?} [{j}]"
                    );
                }
                crate::testing::check_rows_alone_and_values(
                    &format!("{kind:?}"),
                    &x,
                    m,
                    k,
                    n,
                    |isa, x, m, out| p.matmul_with(isa, x, m, out),
                    want,
                    1e-4,
                );
            }
        }
    }

    #[test]
    fn concatenated_rows_multiply_like_the_parts() {
        let kind = HalfKind::Bf16;
        let k = 10;
        let vals = |n: usize, s: usize| -> Vec<u16> {
            (0..n * k)
                .map(|i| kind.from_f32(((i * s % 23) as f32 - 11.0) / 7.0))
                .collect()
        };
        let a = PackedHalf::new(kind, 8, k, &vals(8, 3)).expect("a");
        let b = PackedHalf::new(kind, 5, k, &vals(5, 5)).expect("b");
        assert!(
            PackedHalf::concat_rows(&[&b, &a]).is_none(),
            "5 rows, then more"
        );
        let ab = PackedHalf::concat_rows(&[&a, &b]).expect("same kind and width");
        let x: Vec<f32> = (0..k).map(|i| i as f32 / 3.0 - 1.0).collect();
        let (mut oa, mut ob, mut oab) = (vec![0f32; 8], vec![0f32; 5], vec![0f32; 13]);
        a.matmul(&x, 1, &mut oa);
        b.matmul(&x, 1, &mut ob);
        ab.matmul(&x, 1, &mut oab);
        assert_eq!(oab, [oa, ob].concat());
    }
}
