//! f32 weights in groups of eight interleaved rows, for the products a GEMM library
//! serves badly: a few activation rows (one short query to an encoder), where packing
//! the weights on every call costs more than the arithmetic.
//!
//! The layout is f16's ([`crate::half`]) in f32: [groups, cols, 8], so one load gives
//! one position of the group's eight rows. The AVX2 kernel (also taken on AVX-512
//! CPUs) multiplies each pair of group loads into a tile of six activation rows, with
//! one accumulation chain per row and group whatever the tile, so a row gives the
//! same bits alone as in a batch.

use crate::grouped::{GROUP, GroupOut, par_groups_or_pairs};
use crate::isa::Isa;

/// Activation bytes per block of rows (see [`PackedF32::matmul_with`]).
const ROW_BLOCK_BYTES: usize = 192 * 1024;

/// A [rows, cols] f32 matrix, repacked in groups of eight rows.
#[derive(Debug, Clone)]
pub struct PackedF32 {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// [groups, cols, 8]; padding rows are zero.
    data: Vec<f32>,
}

impl PackedF32 {
    /// Repacks a row-major [rows, cols] matrix; `None` when `values` is not
    /// `rows * cols` long.
    pub fn new(rows: usize, cols: usize, values: &[f32]) -> Option<Self> {
        if values.len() != rows * cols {
            return None;
        }
        let mut data = vec![0f32; rows.div_ceil(GROUP) * cols * GROUP];
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let (g, lane) = (r / GROUP, r % GROUP);
            for (c, v) in row.iter().enumerate() {
                data[(g * cols + c) * GROUP + lane] = *v;
            }
        }
        Some(Self { rows, cols, data })
    }

    /// Repacks the transpose of a row-major [cols, rows] matrix (an `[in, out]`
    /// weight, as `x · W` takes it); `None` when `values` is not `rows * cols` long.
    pub fn from_transposed(rows: usize, cols: usize, values: &[f32]) -> Option<Self> {
        if values.len() != rows * cols {
            return None;
        }
        let mut data = vec![0f32; rows.div_ceil(GROUP) * cols * GROUP];
        for (c, col) in values.chunks_exact(rows.max(1)).enumerate().take(cols) {
            for (r, v) in col.iter().enumerate() {
                data[((r / GROUP) * cols + c) * GROUP + r % GROUP] = *v;
            }
        }
        Some(Self { rows, cols, data })
    }

    /// `out[i * rows + j] = Σ_k x[i, k] · W[j, k]` for `x` [m, cols] row-major.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_with(Isa::detect(), x, m, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (which the CPU must support).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activations are not [m, cols]");
        if m == 0 || self.rows == 0 {
            return;
        }
        // Many rows go through in blocks whose activations stay in L2 while every group
        // reads them (a row's sums do not depend on the blocks).
        let block = (ROW_BLOCK_BYTES / (4 * self.cols).max(1)).max(6) / 6 * 6;
        for (xb, ob) in x
            .chunks(block * self.cols.max(1))
            .zip(out.chunks_mut(block * self.rows))
        {
            let mb = xb.len() / self.cols.max(1);
            let min_groups = 8192 / (self.cols * mb).max(1);
            // Two groups (sixteen weight rows) per broadcast activation.
            #[cfg(target_arch = "x86_64")]
            let pair = (isa != Isa::Scalar).then_some(|g, o0: &mut GroupOut, o1: &mut GroupOut| {
                // SAFETY: as below, for groups `g` and `g + 1` (both exist when a
                // pair is handed over).
                unsafe { x86::group_pair(self, xb, mb, g, o0, o1) }
            });
            #[cfg(not(target_arch = "x86_64"))]
            let pair: Option<fn(usize, &mut GroupOut, &mut GroupOut)> = None;
            let single = |g, o: &mut GroupOut| {
                #[cfg(target_arch = "x86_64")]
                if isa != Isa::Scalar {
                    // SAFETY: every level but scalar has AVX2 + FMA; the kernel reads
                    // group `g` and the mb rows of `xb`.
                    return unsafe { x86::group(self, xb, mb, g, o) };
                }
                self.group_scalar(xb, mb, g, o);
            };
            par_groups_or_pairs(ob, self.rows, mb, min_groups, single, pair);
        }
    }

    fn group_scalar(&self, x: &[f32], m: usize, g: usize, out: &mut GroupOut) {
        let w = &self.data[g * self.cols * GROUP..][..self.cols * GROUP];
        for i in 0..m {
            let xi = &x[i * self.cols..][..self.cols];
            for lane in 0..out.lanes {
                let sum = xi
                    .iter()
                    .zip(w.chunks_exact(GROUP))
                    .map(|(a, wc)| a * wc[lane])
                    .sum();
                out.set(i, lane, sum);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, GroupOut, PackedF32};
    use crate::legacy::x86::PREFETCH_AHEAD;

    /// Rows per tile: six rows by two groups are twelve accumulators, with two weight
    /// registers and a broadcast (of AVX2's sixteen).
    const ROWS: usize = 6;

    /// Group `g` alone (the last of an odd number) for every activation row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group(w: &PackedF32, x: &[f32], m: usize, g: usize, out: &mut GroupOut) {
        unsafe { rows::<1>(w, x, m, g, [out]) }
    }

    /// Groups `g` and `g + 1` for every activation row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn group_pair(
        w: &PackedF32,
        x: &[f32],
        m: usize,
        g: usize,
        o0: &mut GroupOut,
        o1: &mut GroupOut,
    ) {
        unsafe { rows::<2>(w, x, m, g, [o0, o1]) }
    }

    /// Every row of `x` times the `N` groups from `g`, in tiles of [`ROWS`] rows and
    /// one tile of the rows left.
    #[inline(always)]
    unsafe fn rows<const N: usize>(
        w: &PackedF32,
        x: &[f32],
        m: usize,
        g: usize,
        mut outs: [&mut GroupOut; N],
    ) {
        unsafe {
            let mut i0 = 0;
            while i0 + ROWS <= m {
                tile::<ROWS, N>(w, x, g, i0, &mut outs);
                i0 += ROWS;
            }
            match m - i0 {
                5 => tile::<5, N>(w, x, g, i0, &mut outs),
                4 => tile::<4, N>(w, x, g, i0, &mut outs),
                3 => tile::<3, N>(w, x, g, i0, &mut outs),
                2 => tile::<2, N>(w, x, g, i0, &mut outs),
                1 => tile::<1, N>(w, x, g, i0, &mut outs),
                _ => {}
            }
        }
    }

    /// Rows `i0..i0 + T` of `x` times the `N` groups from `g`: one accumulation chain
    /// per row and group, over the positions in order, whatever `T` and `N`.
    // Register arrays are indexed by tile row and group on purpose.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const T: usize, const N: usize>(
        w: &PackedF32,
        x: &[f32],
        g: usize,
        i0: usize,
        outs: &mut [&mut GroupOut; N],
    ) {
        unsafe {
            let cols = w.cols;
            let ps: [*const f32; N] =
                std::array::from_fn(|n| w.data.as_ptr().add((g + n) * cols * GROUP));
            let xs: [*const f32; T] = std::array::from_fn(|t| x.as_ptr().add((i0 + t) * cols));
            // [row][group]
            let mut acc = [[_mm256_setzero_ps(); N]; T];
            let step = |acc: &mut [[__m256; N]; T], c: usize| {
                let wn: [__m256; N] =
                    std::array::from_fn(|n| _mm256_loadu_ps(ps[n].add(c * GROUP)));
                for t in 0..T {
                    let xv = _mm256_broadcast_ss(&*xs[t].add(c));
                    for n in 0..N {
                        acc[t][n] = _mm256_fmadd_ps(wn[n], xv, acc[t][n]);
                    }
                }
            };
            let mut c = 0;
            // Two positions of a group are one cache line.
            while c + 2 <= cols {
                for p in ps {
                    _mm_prefetch::<_MM_HINT_T0>(
                        (p.add(c * GROUP) as *const i8).wrapping_add(PREFETCH_AHEAD),
                    );
                }
                step(&mut acc, c);
                step(&mut acc, c + 1);
                c += 2;
            }
            if c < cols {
                step(&mut acc, c);
            }
            for (n, o) in outs.iter_mut().enumerate() {
                for (t, row) in acc.iter().enumerate() {
                    let mut v = [0f32; GROUP];
                    _mm256_storeu_ps(v.as_mut_ptr(), row[n]);
                    o.store(i0 + t, &v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_like_the_plain_matrix_and_rows_alone_like_batched() {
        let mut rng = crate::testdata::Rng::new(5);
        let shapes = [
            (3, 37, 70),
            (1, 64, 16),
            (5, 8, 9),
            (9, 3, 8),
            (14, 384, 1536),
            (300, 384, 40),
        ];
        for (m, k, n) in shapes {
            let x: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.2, 1.2)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.uniform(-0.9, 0.9)).collect();
            let p = PackedF32::new(n, k, &w).expect("sizes match");
            // The same matrix given as its transpose packs to the same bits.
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let pt = PackedF32::from_transposed(n, k, &wt).expect("sizes match");
            assert_eq!(p.data, pt.data, "{m}x{k}x{n}: transposed packing");
            let want = |i: usize, j: usize| -> f32 {
                (0..k)
                    .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                    .sum::<f64>() as f32
            };
            crate::testing::check_rows_alone_and_values(
                "f32",
                &x,
                m,
                k,
                n,
                |isa, x, m, out| p.matmul_with(isa, x, m, out),
                want,
                1e-4 * (k as f32).sqrt(),
            );
        }
        assert!(PackedF32::new(2, 3, &[0.0; 5]).is_none());
        assert!(PackedF32::from_transposed(2, 3, &[0.0; 7]).is_none());
    }
}
