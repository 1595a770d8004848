//! What the row-interleaved CPU weight formats ([`crate::kernels::PackedHalf`],
//! [`crate::qkernels::PackedQ`]) share: groups of eight rows, stacking matrices whose
//! groups are whole, and running a kernel over the groups in parallel.

use rayon::prelude::*;

/// Rows interleaved in one group.
pub const GROUP: usize = 8;

/// Whether matrices described by `(kind, rows, cols)` can be stacked: one kind, one
/// width, and whole groups in every part but the last (else a group would straddle).
pub fn stackable<K: PartialEq>(parts: impl IntoIterator<Item = (K, usize, usize)>) -> bool {
    let parts: Vec<_> = parts.into_iter().collect();
    let Some(((kind, _, cols), init)) = parts.split_last() else {
        return false;
    };
    parts.iter().all(|(k, _, c)| k == kind && c == cols)
        && init.iter().all(|(_, rows, _)| rows.is_multiple_of(GROUP))
}

/// The parts' `field`s, one after another.
pub fn concat<P, T: Copy>(parts: &[&P], field: impl Fn(&P) -> &[T]) -> Vec<T> {
    parts
        .iter()
        .flat_map(|p| field(p).iter().copied())
        .collect()
}

/// Where one group's outputs go in a row-major product [m, rows]: columns
/// `8g..8g + lanes`. Each group writes only its own columns, so groups can be
/// computed in parallel on one output buffer.
#[derive(Debug)]
pub struct GroupOut {
    ptr: *mut f32,
    rows: usize,
    col: usize,
    /// Activation rows.
    pub m: usize,
    /// Rows of the group that are real (8, or fewer in a last partial group).
    pub lanes: usize,
}

impl GroupOut {
    /// Output (activation row `i`, weight row `8g + lane`).
    #[inline(always)]
    pub fn set(&mut self, i: usize, lane: usize, v: f32) {
        assert!(i < self.m && lane < self.lanes);
        // SAFETY: in bounds of the [m, rows] buffer (checked above); the group's
        // columns belong to this GroupOut alone.
        unsafe { *self.ptr.add(i * self.rows + self.col + lane) = v }
    }

    /// The group's eight outputs for activation row `i` (lanes past `lanes` dropped).
    #[inline(always)]
    pub fn store(&mut self, i: usize, v: &[f32; GROUP]) {
        assert!(i < self.m);
        // SAFETY: as in `set`: `lanes` values from column `col` of row `i`.
        unsafe {
            let dst = self.ptr.add(i * self.rows + self.col);
            if self.lanes == GROUP {
                // A whole group: one fixed-size move, not a call to `memcpy` (which a
                // copy of a run-time length becomes) for every row of every group.
                (dst as *mut [f32; GROUP]).write_unaligned(*v);
            } else {
                std::ptr::copy_nonoverlapping(v.as_ptr(), dst, self.lanes);
            }
        }
    }
}

/// Calls `kernel(g, out)` for every group `g` of a product `out` ([m, rows]
/// row-major), in parallel tasks that each hold at least `min_groups` groups: a few
/// tasks per thread, and enough work in each to pay for handing it off.
pub fn par_groups(
    out: &mut [f32],
    rows: usize,
    m: usize,
    min_groups: usize,
    kernel: impl Fn(usize, &mut GroupOut) + Sync + Send,
) {
    par_units::<1>(out, rows, m, min_groups, |g, outs| {
        if let [o] = outs {
            kernel(g, o)
        }
    });
}

/// [`par_groups`] with `single` for each group, or, where `pair` is given, `pair(2p,
/// first, second)` for each pair `p` of groups (kernels that fill sixteen rows, two
/// groups, per instruction) and `single` for the last group of an odd number.
pub fn par_groups_or_pairs(
    out: &mut [f32],
    rows: usize,
    m: usize,
    min_groups: usize,
    single: impl Fn(usize, &mut GroupOut) + Sync + Send,
    pair: Option<impl Fn(usize, &mut GroupOut, &mut GroupOut) + Sync + Send>,
) {
    match pair {
        Some(pair) => par_units::<2>(out, rows, m, min_groups.div_ceil(2), |g, outs| match outs {
            [a, b] => pair(g, a, b),
            [a] => single(g, a),
            _ => {}
        }),
        None => par_groups(out, rows, m, min_groups, single),
    }
}

/// Runs `kernel(first group, its outputs)` over units of `N` consecutive groups
/// (fewer in a last partial unit), in parallel tasks of at least `min_units`.
fn par_units<const N: usize>(
    out: &mut [f32],
    rows: usize,
    m: usize,
    min_units: usize,
    kernel: impl Fn(usize, &mut [GroupOut]) + Sync + Send,
) {
    assert_eq!(out.len(), rows * m, "output is not [m, rows]");
    let groups = rows.div_ceil(GROUP);
    let units = groups.div_ceil(N);
    let tasks = 8 * rayon::current_num_threads();
    let per_task = units.div_ceil(tasks).max(min_units).max(1);
    let base = out.as_mut_ptr() as usize;
    (0..units.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            for u in task * per_task..((task + 1) * per_task).min(units) {
                let first = u * N;
                let mut outs: [GroupOut; N] = std::array::from_fn(|j| GroupOut {
                    ptr: base as *mut f32,
                    rows,
                    col: (first + j) * GROUP,
                    m,
                    lanes: rows.saturating_sub((first + j) * GROUP).min(GROUP),
                });
                let real = N.min(groups - first);
                kernel(first, &mut outs[..real]);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_needs_one_kind_one_width_and_whole_groups() {
        assert!(stackable([(0, 8, 32), (0, 5, 32)]));
        assert!(
            !stackable([(0, 5, 32), (0, 8, 32)]),
            "a partial group first"
        );
        assert!(!stackable([(0, 8, 32), (1, 8, 32)]), "two kinds");
        assert!(!stackable([(0, 8, 32), (0, 8, 64)]), "two widths");
        assert!(!stackable(Vec::<(u8, usize, usize)>::new()));
    }

    #[test]
    fn every_group_writes_its_own_columns_of_every_row() {
        let (rows, m): (usize, usize) = (8 * 37 + 3, 3);
        let mut out = vec![-1f32; rows * m];
        par_groups(&mut out, rows, m, 1, |g, o| {
            for i in 0..m {
                for lane in 0..o.lanes {
                    o.set(i, lane, (i * rows + g * GROUP + lane) as f32);
                }
            }
        });
        assert!(out.iter().enumerate().all(|(j, v)| *v == j as f32));
    }

    #[test]
    fn every_pair_of_groups_writes_its_own_columns_and_an_odd_last_group_comes_alone() {
        let (rows, m): (usize, usize) = (8 * 36 + 3, 2);
        let mut out = vec![-1f32; rows * m];
        let fill = |g: usize, o: &mut GroupOut| {
            for i in 0..m {
                for lane in 0..o.lanes {
                    o.set(i, lane, (i * rows + g * GROUP + lane) as f32);
                }
            }
        };
        let alone = std::sync::atomic::AtomicUsize::new(usize::MAX);
        let single = |g: usize, o: &mut GroupOut| {
            fill(g, o);
            alone.store(g, std::sync::atomic::Ordering::Relaxed);
        };
        let pair = |g: usize, a: &mut GroupOut, b: &mut GroupOut| {
            assert!(g.is_multiple_of(2));
            fill(g, a);
            fill(g + 1, b);
        };
        par_groups_or_pairs(&mut out, rows, m, 1, single, Some(pair));
        assert!(out.iter().enumerate().all(|(j, v)| *v == j as f32));
        assert_eq!(alone.into_inner(), 36, "37 groups: the last comes alone");
    }
}
