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

/// Calls `kernel(g, out)` for every group `g` of a transposed product `out_t`
/// ([rows, m]; `out` is the group's [rows of the group, m] slice), in parallel tasks
/// that each hold at least `min_groups` groups: a few tasks per thread, and enough
/// work in each to pay for handing it off.
pub fn par_groups(
    out_t: &mut [f32],
    m: usize,
    groups: usize,
    min_groups: usize,
    kernel: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let tasks = 8 * rayon::current_num_threads();
    let per_task = groups.div_ceil(tasks).max(min_groups).max(1);
    out_t
        .par_chunks_mut(per_task * GROUP * m)
        .enumerate()
        .for_each(|(task, out)| {
            for (gi, out) in out.chunks_mut(GROUP * m).enumerate() {
                kernel(task * per_task + gi, out);
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
    fn every_group_is_visited_once_with_its_rows() {
        let (rows, m): (usize, usize) = (8 * 37 + 3, 2);
        let groups = rows.div_ceil(GROUP);
        let mut out = vec![0f32; rows * m];
        par_groups(&mut out, m, groups, 1, |g, o| {
            for (j, v) in o.iter_mut().enumerate() {
                *v += (g * GROUP * m + j) as f32;
            }
        });
        assert!(out.iter().enumerate().all(|(j, v)| *v == j as f32));
    }
}
