//! Decode steps of concurrent generations on one model, run together.
//!
//! Every generation runs its own loop on its own thread. A one-token decode step is
//! little arithmetic but reads every weight of the model, so when several sequences
//! step at once it pays to run them as one [`InferenceBackend::forward_batch`]: the
//! weights are read once for all of them. A step that finds no batch running leads
//! the next one: it waits a little (a quarter of a batch's run time at most, 5 ms at
//! the very most) for the other generations under way
//! on the model (which are sampling their next token) to step too, then runs with
//! every step waiting; steps that arrive while a batch runs form the next one. A lone
//! generation never waits, and under load the batch size follows the load.
//!
//! The thread whose step starts a batch runs it and hands every other step its result
//! (and its cache back). A batch is only ever one backend instance (one fallback
//! epoch): steps of an older epoch are left for a leader of their own.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gllm_api::{BackendError, Device, InferenceBackend, KvCache};

use super::contain;

/// The most steps in one batch.
const MAX_BATCH: usize = 32;
/// How long a leader waits for the other generations to step too: a quarter of the
/// last batch's run time, within these bounds (a stalled member, e.g. one whose
/// client reads slowly, costs the others at most that much per step).
const GATHER_MIN: Duration = Duration::from_micros(500);
const GATHER_MAX: Duration = Duration::from_millis(5);

/// What a step gets back: its cache, and the logits or why there are none.
pub(crate) struct Outcome {
    /// The cache the step brought (discard it unless `result` is `Ok`; `None` only
    /// when the batch was lost to a panic, and then `result` says retry).
    pub cache: Option<Box<dyn KvCache>>,
    /// The logits, or the batch's error.
    pub result: Result<Vec<f32>, StepError>,
}

/// Why a batched step has no logits.
pub(crate) enum StepError {
    /// The backend failed on the device: fail over (every step of the batch sees it).
    Backend(BackendError),
    /// The batch failed for a reason that may belong to one of its sequences: redo this
    /// step alone, from a fresh cache, so that only a faulty sequence sees its error.
    RetryAlone,
}

struct Pending {
    id: u64,
    epoch: u64,
    backend: Arc<dyn InferenceBackend>,
    device: Device,
    cache: Box<dyn KvCache>,
    tokens: Vec<u32>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Pending>,
    running: bool,
    finished: HashMap<u64, Outcome>,
    next_id: u64,
    /// How long the last batch took to run.
    last_run: Duration,
}

/// Gathers concurrent steps on one model into batches (see the module docs).
#[derive(Default)]
pub(crate) struct StepBatcher {
    state: Mutex<State>,
    changed: Condvar,
    batches: AtomicU64,
    steps: AtomicU64,
    /// Sequences in the middle of a generation on this model (see [`Member`]).
    members: Arc<AtomicUsize>,
}

/// A sequence's membership in the batches of one model, from its first batched step
/// to the end of its generation: the count of members is how many steps a leader
/// waits for. Dropping it ends the membership.
pub(crate) struct Member(Arc<AtomicUsize>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StepBatcher {
    /// Makes a sequence a member until the returned value is dropped.
    pub fn join(&self) -> Member {
        self.members.fetch_add(1, Ordering::Relaxed);
        Member(self.members.clone())
    }

    /// (batches run, steps in them) since the model was loaded.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.steps.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `tokens` to `cache` on `backend` (of fallback `epoch`, on `device`),
    /// together with whatever other steps are waiting, and returns this step's outcome.
    pub fn step(
        &self,
        backend: &Arc<dyn InferenceBackend>,
        epoch: u64,
        device: Device,
        cache: Box<dyn KvCache>,
        tokens: &[u32],
    ) -> Outcome {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.waiting.push(Pending {
            id,
            epoch,
            backend: backend.clone(),
            device,
            cache,
            tokens: tokens.to_vec(),
        });
        // A leader gathering its batch may be waiting for this step.
        self.changed.notify_all();
        loop {
            if let Some(out) = st.finished.remove(&id) {
                return out;
            }
            if !st.running {
                st.running = true;
                // Lead. The other generations on this model are sampling their next
                // token and about to step again: give them a moment (a quarter of a
                // batch's run time at most) to join, so that batches stay full instead of splitting into a
                // first arrival and the rest. A lone generation never waits.
                let gather = (st.last_run / 4).clamp(GATHER_MIN, GATHER_MAX);
                let deadline = Instant::now() + gather;
                let want = self.members.load(Ordering::Relaxed).clamp(1, MAX_BATCH);
                while st.waiting.iter().filter(|p| p.epoch == epoch).count() < want {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = self
                        .changed
                        .wait_timeout(st, deadline - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                // Take the waiting steps of this epoch, this one among them unless
                // more than a batch are waiting (then a later round takes it).
                let (batch, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiting)
                    .into_iter()
                    .enumerate()
                    .partition(|(i, p)| p.epoch == epoch && *i < MAX_BATCH);
                st.waiting = rest.into_iter().map(|(_, p)| p).collect();
                let batch: Vec<Pending> = batch.into_iter().map(|(_, p)| p).collect();
                drop(st);
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.steps.fetch_add(batch.len() as u64, Ordering::Relaxed);
                // `run` contains the backend's panics; should anything else in it
                // panic, every step of the batch is redone alone rather than left
                // waiting for a result that never comes.
                let ids: Vec<u64> = batch.iter().map(|p| p.id).collect();
                let started = Instant::now();
                let outcomes = catch_unwind(AssertUnwindSafe(|| run(batch))).unwrap_or_else(|_| {
                    ids.into_iter()
                        .map(|id| {
                            let result = Err(StepError::RetryAlone);
                            (
                                id,
                                Outcome {
                                    cache: None,
                                    result,
                                },
                            )
                        })
                        .collect()
                });
                st = self.lock();
                st.last_run = started.elapsed();
                st.finished.extend(outcomes);
                st.running = false;
                self.changed.notify_all();
                continue;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Runs one batch (never panics: the backend call is contained).
fn run(mut batch: Vec<Pending>) -> Vec<(u64, Outcome)> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let (backend, device) = (first.backend.clone(), first.device);
    let result = {
        let mut steps: Vec<(&mut dyn KvCache, &[u32])> = batch
            .iter_mut()
            .map(|p| (p.cache.as_mut(), p.tokens.as_slice()))
            .collect();
        contain(device, || {
            if steps.len() == 1 {
                let (cache, tokens) = &mut steps[0];
                backend.forward(&mut **cache, tokens).map(|l| vec![l])
            } else {
                backend.forward_batch(&mut steps)
            }
        })
    };
    let n = batch.len();
    let mut results: Vec<Result<Vec<f32>, StepError>> = match result {
        Ok(rows) if rows.len() == n => rows.into_iter().map(Ok).collect(),
        Ok(rows) => {
            let e = BackendError::internal(format!(
                "forward_batch returned {} rows for {n} sequences",
                rows.len()
            ));
            (0..n).map(|_| Err(StepError::Backend(e.clone()))).collect()
        }
        Err(e) if e.is_device_error() || n == 1 => {
            (0..n).map(|_| Err(StepError::Backend(e.clone()))).collect()
        }
        Err(_) => (0..n).map(|_| Err(StepError::RetryAlone)).collect(),
    };
    batch
        .into_iter()
        .rev()
        .map(|p| {
            let result = results.pop().unwrap_or(Err(StepError::RetryAlone));
            (
                p.id,
                Outcome {
                    cache: Some(p.cache),
                    result,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use gllm_api::{DType, ModelInfo, Task};

    use super::*;

    /// A cache that only counts its positions.
    struct Count(usize);

    impl KvCache for Count {
        fn len(&self) -> usize {
            self.0
        }
        fn truncate(&mut self, len: usize) -> Result<(), BackendError> {
            self.0 = len.min(self.0);
            Ok(())
        }
    }

    /// "Logits" = [positions before the step, the token]; token 666 is invalid input
    /// (alone or in any batch); batches take a while, so that steps pile up.
    #[derive(Default)]
    struct Echo {
        largest: AtomicUsize,
    }

    impl Echo {
        fn one(cache: &mut dyn KvCache, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
            if tokens.contains(&666) {
                return Err(BackendError::invalid_input("token 666"));
            }
            let c = gllm_api::downcast_cache::<Count>(cache)?;
            let before = c.0;
            c.0 += tokens.len();
            Ok(vec![before as f32, tokens[tokens.len() - 1] as f32])
        }
    }

    impl InferenceBackend for Echo {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                task: Task::Generate,
                device: Device::CPU,
                dtype: DType::F32,
                max_positions: 1 << 20,
                vocab_size: 1000,
                output_dim: 2,
            }
        }
        fn forward(
            &self,
            cache: &mut dyn KvCache,
            tokens: &[u32],
        ) -> Result<Vec<f32>, BackendError> {
            std::thread::sleep(Duration::from_millis(2));
            Self::one(cache, tokens)
        }
        fn forward_batch(
            &self,
            steps: &mut [(&mut dyn KvCache, &[u32])],
        ) -> Result<Vec<Vec<f32>>, BackendError> {
            self.largest.fetch_max(steps.len(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
            if steps.iter().any(|(_, t)| t.contains(&666)) {
                return Err(BackendError::invalid_input("token 666 in the batch"));
            }
            steps
                .iter_mut()
                .map(|(c, t)| Self::one(&mut **c, t))
                .collect()
        }
        fn batches_steps(&self) -> bool {
            true
        }
    }

    #[test]
    fn concurrent_steps_share_batches_and_each_gets_its_own_result() {
        let echo = Arc::new(Echo::default());
        let backend: Arc<dyn InferenceBackend> = echo.clone();
        let batcher = StepBatcher::default();
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let (backend, batcher) = (&backend, &batcher);
                s.spawn(move || {
                    let _member = batcher.join();
                    let mut cache: Box<dyn KvCache> = Box::new(Count(100 * t as usize));
                    for i in 0..20u32 {
                        let out = batcher.step(backend, 0, Device::CPU, cache, &[t * 1000 + i]);
                        let want = vec![(100 * t + i) as f32, (t * 1000 + i) as f32];
                        assert!(
                            matches!(&out.result, Ok(l) if *l == want),
                            "thread {t} step {i}"
                        );
                        cache = out.cache.expect("the cache comes back");
                    }
                    assert_eq!(cache.len(), 100 * t as usize + 20);
                });
            }
        });
        let (batches, steps) = batcher.counts();
        assert_eq!(steps, 160);
        assert!(
            batches < steps,
            "no step ever shared a batch ({batches} batches)"
        );
        assert!(echo.largest.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_failing_batch_sends_everyone_to_retry_alone() {
        let backend: Arc<dyn InferenceBackend> = Arc::new(Echo::default());
        let batch = vec![
            Pending {
                id: 1,
                epoch: 0,
                backend: backend.clone(),
                device: Device::CPU,
                cache: Box::new(Count(3)),
                tokens: vec![5],
            },
            Pending {
                id: 2,
                epoch: 0,
                backend: backend.clone(),
                device: Device::CPU,
                cache: Box::new(Count(4)),
                tokens: vec![666],
            },
        ];
        let out = run(batch);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|(_, o)| matches!(o.result, Err(StepError::RetryAlone)))
        );
        // Alone, the error is the step's own.
        let alone = run(vec![Pending {
            id: 3,
            epoch: 0,
            backend,
            device: Device::CPU,
            cache: Box::new(Count(4)),
            tokens: vec![666],
        }]);
        assert!(
            matches!(&alone[0].1.result, Err(StepError::Backend(e)) if e.message.contains("666"))
        );
    }
}
