//! How far a backend has got reading a model's weights, for progress bars.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The receiver of a load's progress: called with `(done, total)` bytes.
type Report = dyn Fn(u64, u64) + Send + Sync;

struct Shared {
    total: AtomicU64,
    done: AtomicU64,
    report: Box<Report>,
}

/// A load's progress reporter, handed to [`crate::BackendFactory::load_with_progress`].
///
/// A backend sets the number of bytes of weights it will read with
/// [`LoadProgress::set_total`] and calls [`LoadProgress::advance`] as each tensor is
/// read (and converted or repacked). Cheap to clone and to call once per tensor;
/// [`LoadProgress::none`] reports nowhere.
#[derive(Clone, Default)]
pub struct LoadProgress {
    shared: Option<Arc<Shared>>,
}

impl LoadProgress {
    /// A reporter that reports nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// A reporter calling `report(done, total)` on every change.
    pub fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Self {
            shared: Some(Arc::new(Shared {
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                report: Box::new(report),
            })),
        }
    }

    /// Declares the bytes this load will read in all (replacing an earlier total).
    pub fn set_total(&self, bytes: u64) {
        if let Some(s) = &self.shared {
            s.total.store(bytes, Ordering::Relaxed);
            (s.report)(s.done.load(Ordering::Relaxed), bytes);
        }
    }

    /// Records `bytes` more read. `done` never passes the total once one is set.
    pub fn advance(&self, bytes: u64) {
        if let Some(s) = &self.shared {
            let total = s.total.load(Ordering::Relaxed);
            let before = s.done.fetch_add(bytes, Ordering::Relaxed);
            let done = before.saturating_add(bytes);
            let shown = if total > 0 { done.min(total) } else { done };
            (s.report)(shown, total);
        }
    }
}

impl fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shared {
            None => f.write_str("LoadProgress(none)"),
            Some(s) => write!(
                f,
                "LoadProgress({}/{})",
                s.done.load(Ordering::Relaxed),
                s.total.load(Ordering::Relaxed)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn reports_done_and_total_capped_at_the_total() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let p = LoadProgress::new(move |d, t| sink.lock().unwrap().push((d, t)));
        p.set_total(10);
        p.advance(4);
        p.clone().advance(4);
        p.advance(5);
        assert_eq!(*seen.lock().unwrap(), [(0, 10), (4, 10), (8, 10), (10, 10)]);
        LoadProgress::none().advance(3);
    }
}
