//! A model being served: its candidates (backend × device, in preference order),
//! the backend in use, and GPU → CPU fallback at load and in the middle of a request.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gllm_api::{BackendError, Device, DeviceKind, InferenceBackend, KvCache, ModelInfo};

use crate::error::{Result, RuntimeError};
use crate::grammar::GrammarEnv;
use crate::manifest::ModelEntry;
use crate::model_files::{ModelFiles, TextSide};
use crate::prompt_cache::{PromptCache, PromptCacheStats};
use crate::registry::BackendEntry;

mod step_batch;
use step_batch::{Member, StepBatcher, StepError};

/// One (backend, device) pair to try.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub backend: BackendEntry,
    pub device: Device,
}

/// Which backend serves a model now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBackend {
    /// The backend's name.
    pub backend: String,
    /// The device it runs on.
    pub device: Device,
    /// How many times this model fell back to another device since it was loaded.
    pub fallbacks: u64,
    /// How many times it went back to a preferred device after a fallback (see the
    /// `failback_after` option).
    pub failbacks: u64,
    /// Batches of concurrent decode steps run since the model was loaded (where the
    /// backend batches steps; see [`gllm_api::InferenceBackend::batches_steps`]).
    pub step_batches: u64,
    /// Decode steps run in those batches (`batched_steps / step_batches` is the mean
    /// batch size).
    pub batched_steps: u64,
    /// What the backend reports about the model.
    pub info: ModelInfo,
}

struct Active {
    backend: Arc<dyn InferenceBackend>,
    candidate: usize,
    epoch: u64,
    /// After a fallback: when to try the devices before this one again, and the wait
    /// that doubles after each failed try.
    retry: Option<(Instant, Duration)>,
}

/// The first wait before a model that fell back tries its preferred device again.
pub const FAILBACK_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two tries.
const FAILBACK_MAX: Duration = Duration::from_secs(30 * 60);

/// A loaded model with its text side.
pub(crate) struct ServedModel {
    pub entry: ModelEntry,
    pub files: ModelFiles,
    pub text: TextSide,
    candidates: Vec<Candidate>,
    active: RwLock<Active>,
    fallbacks: AtomicU64,
    /// Returns to a preferred device after a fallback.
    failbacks: AtomicU64,
    steps: StepBatcher,
    /// The prompt cache, once enabled ([`ServedModel::enable_prompt_cache`]).
    prompt_cache: std::sync::OnceLock<PromptCache>,
    /// The candidate loaded at startup: where a model that fell back returns.
    preferred: usize,
    /// The first wait before trying it again (`failback_after` option, seconds).
    failback_after: Duration,
    /// Set while one request tries the preferred device again.
    failing_back: AtomicBool,
}

/// Why a candidate was skipped or failed, for `gllm models` and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Backend name.
    pub backend: String,
    /// Device.
    pub device: Device,
    /// `None` when it loaded; else why not.
    pub failure: Option<String>,
}

/// Runs backend code, turning a panic into an error (on a GPU: the device is unusable).
pub(crate) fn contain<T>(
    device: Device,
    f: impl FnOnce() -> std::result::Result<T, BackendError>,
) -> std::result::Result<T, BackendError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(match device.kind {
                DeviceKind::Gpu => {
                    BackendError::device_unavailable(format!("backend panicked on {device}: {msg}"))
                }
                DeviceKind::Cpu => BackendError::internal(format!("backend panicked: {msg}")),
            })
        }
    }
}

/// A load error that ends the search: anything but a device error or an
/// unsupported configuration (corrupt weights must not be masked by a fallback).
fn stops_fallback(e: &BackendError) -> bool {
    !e.is_device_error() && e.kind != gllm_api::ErrorKind::Unsupported
}

/// Tries candidates from `start` on, skipping `skip_device`; returns the first that loads.
/// Device errors move on; any other error stops (corrupt weights must not be masked).
fn load_first(
    files: &ModelFiles,
    candidates: &[Candidate],
    start: usize,
    skip_device: Option<Device>,
    attempts: &mut Vec<Attempt>,
) -> std::result::Result<(usize, Arc<dyn InferenceBackend>), (BackendError, usize)> {
    let mut last = BackendError::device_unavailable("no candidate left");
    for (i, c) in candidates.iter().enumerate().skip(start) {
        if Some(c.device) == skip_device {
            continue;
        }
        let load = |progress| {
            contain(c.device, || {
                c.backend
                    .factory
                    .load_with_progress(&files.spec, c.device, progress)
            })
        };
        match crate::load_progress::reporting(&files.spec.id, c.backend.name(), c.device, load) {
            Ok(b) => {
                attempts.push(Attempt {
                    backend: c.backend.name().to_string(),
                    device: c.device,
                    failure: None,
                });
                return Ok((i, Arc::from(b)));
            }
            Err(e) => {
                attempts.push(Attempt {
                    backend: c.backend.name().to_string(),
                    device: c.device,
                    failure: Some(e.to_string()),
                });
                if stops_fallback(&e) {
                    return Err((e, i));
                }
                last = e;
            }
        }
    }
    Err((last, candidates.len()))
}

/// The `failback_after` option: seconds before a model that fell back tries its
/// preferred device again (default [`FAILBACK_AFTER`]).
fn failback_after(entry: &ModelEntry) -> Result<Duration> {
    match entry.options.get("failback_after") {
        None => Ok(FAILBACK_AFTER),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| RuntimeError::ModelFiles {
                id: entry.id.clone(),
                message: format!(
                    "option `failback_after` = `{v}` is not a number of seconds (0 to 86400)"
                ),
            }),
    }
}

impl ServedModel {
    /// Loads the model on the first candidate that works.
    pub fn load(
        entry: ModelEntry,
        files: ModelFiles,
        text: TextSide,
        candidates: Vec<Candidate>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Self> {
        match load_first(&files, &candidates, 0, None, attempts) {
            Ok((candidate, backend)) => Ok(Self {
                preferred: candidate,
                failback_after: failback_after(&entry)?,
                failing_back: AtomicBool::new(false),
                entry,
                files,
                text,
                candidates,
                active: RwLock::new(Active {
                    backend,
                    candidate,
                    epoch: 0,
                    retry: None,
                }),
                fallbacks: AtomicU64::new(0),
                failbacks: AtomicU64::new(0),
                steps: StepBatcher::default(),
                prompt_cache: std::sync::OnceLock::new(),
            }),
            Err((e, i)) if stops_fallback(&e) => {
                let c = &candidates[i];
                Err(RuntimeError::Backend {
                    id: entry.id.clone(),
                    backend: c.backend.name().to_string(),
                    device: c.device.to_string(),
                    source: e,
                })
            }
            Err(_) => Err(RuntimeError::NoCandidate {
                id: entry.id.clone(),
                reasons: format_attempts(attempts),
            }),
        }
    }

    fn current(&self) -> (Arc<dyn InferenceBackend>, u64, usize) {
        let a = self.active.read().unwrap_or_else(|p| p.into_inner());
        (a.backend.clone(), a.epoch, a.candidate)
    }

    /// The backend in use.
    pub fn active(&self) -> ActiveBackend {
        let (backend, _, idx) = self.current();
        let c = &self.candidates[idx];
        let (step_batches, batched_steps) = self.steps.counts();
        ActiveBackend {
            backend: c.backend.name().to_string(),
            device: c.device,
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            failbacks: self.failbacks.load(Ordering::Relaxed),
            step_batches,
            batched_steps,
            info: backend.info(),
        }
    }

    /// After a fallback, once the wait has passed, loads the model on the devices before
    /// the current one again (one request tries; the others go on meanwhile). Success
    /// moves the model back (sequences re-prefill there, as after a fallback); failure
    /// doubles the wait.
    fn maybe_fail_back(&self) {
        let (cur, due) = {
            let a = self.active.read().unwrap_or_else(|p| p.into_inner());
            let due =
                a.candidate > self.preferred && a.retry.is_some_and(|(at, _)| Instant::now() >= at);
            (a.candidate, due)
        };
        if !due || self.failing_back.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut attempts = Vec::new();
        let loaded = load_first(
            &self.files,
            &self.candidates[..cur],
            self.preferred,
            None,
            &mut attempts,
        );
        {
            let mut a = self.active.write().unwrap_or_else(|p| p.into_inner());
            match loaded {
                Ok((candidate, backend)) if a.candidate == cur => {
                    let c = &self.candidates[candidate];
                    eprintln!(
                        "gllm: model `{}`: back on {} on {}",
                        self.entry.id,
                        c.backend.name(),
                        c.device
                    );
                    // The wait is kept: if the device fails again, the next one doubles.
                    let w = a.retry.map_or(self.failback_after, |(_, w)| w);
                    let retry = Some((Instant::now() + w, w));
                    *a = Active {
                        backend,
                        candidate,
                        epoch: a.epoch + 1,
                        retry,
                    };
                    self.failbacks.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some((_, w)) = a.retry {
                        let w = (w * 2).min(FAILBACK_MAX);
                        a.retry = Some((Instant::now() + w, w));
                    }
                }
            }
        }
        self.failing_back.store(false, Ordering::SeqCst);
    }

    /// Moves to the next device after a device error seen at `epoch` (no-op when
    /// another request already moved on).
    fn fail_over(&self, epoch: u64, cause: &BackendError) -> Result<()> {
        let mut a = self.active.write().unwrap_or_else(|p| p.into_inner());
        if a.epoch != epoch {
            return Ok(());
        }
        let failed = self.candidates[a.candidate].clone();
        let mut attempts = Vec::new();
        match load_first(
            &self.files,
            &self.candidates,
            a.candidate + 1,
            Some(failed.device),
            &mut attempts,
        ) {
            Ok((candidate, backend)) => {
                let next = &self.candidates[candidate];
                eprintln!(
                    "gllm: model `{}`: {} on {} failed ({cause}); continuing with {} on {}",
                    self.entry.id,
                    failed.backend.name(),
                    failed.device,
                    next.backend.name(),
                    next.device
                );
                // A transient error (one request out of memory, a device reset) should not
                // keep the model off its preferred device for good: try it again later.
                let wait = match a.retry {
                    Some((_, w)) => (w * 2).min(FAILBACK_MAX),
                    None => self.failback_after,
                };
                *a = Active {
                    backend,
                    candidate,
                    epoch: epoch + 1,
                    retry: Some((Instant::now() + wait, wait)),
                };
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => Err(RuntimeError::Backend {
                id: self.entry.id.clone(),
                backend: failed.backend.name().to_string(),
                device: failed.device.to_string(),
                source: BackendError::new(
                    cause.kind,
                    format!(
                        "{}; no other device could take over:\n{}",
                        cause.message,
                        format_attempts(&attempts)
                    ),
                ),
            }),
        }
    }

    fn backend_error(&self, candidate: usize, e: BackendError) -> RuntimeError {
        let c = &self.candidates[candidate];
        RuntimeError::Backend {
            id: self.entry.id.clone(),
            backend: c.backend.name().to_string(),
            device: c.device.to_string(),
            source: e,
        }
    }

    /// Keeps finished sequences' KV caches, up to `budget` bytes, for later prompts
    /// that begin the same way. The first call sets the budget; later calls change nothing.
    pub(crate) fn enable_prompt_cache(&self, budget: usize) {
        let _ = self.prompt_cache.get_or_init(|| PromptCache::new(budget));
    }

    /// The prompt cache's counters, when enabled.
    pub(crate) fn prompt_cache_stats(&self) -> Option<PromptCacheStats> {
        self.prompt_cache.get().map(PromptCache::stats)
    }

    /// A sequence for `prompt`: holding the longest prefix the prompt cache has of it,
    /// or empty.
    pub(crate) fn sequence_for(&self, prompt: &[u32]) -> Sequence {
        let Some(pc) = self.prompt_cache.get() else {
            return Sequence::default();
        };
        let epoch = self.current().1;
        match pc.lookup(epoch, prompt) {
            Some((cache, tokens)) => Sequence {
                cache: Some((epoch, cache)),
                tokens,
                member: None,
            },
            None => Sequence::default(),
        }
    }

    /// Leaves a finished sequence's cache in the prompt cache (when enabled).
    pub(crate) fn keep_sequence(&self, seq: Sequence) {
        if let (Some(pc), Some((epoch, cache))) = (self.prompt_cache.get(), seq.cache) {
            pc.store(epoch, seq.tokens, cache);
        }
    }

    /// Bytes of KV cache per position on the backend in use.
    pub(crate) fn kv_bytes_per_token(&self) -> Option<usize> {
        self.current().0.kv_bytes_per_token()
    }

    /// The model's token table and grammar compiler, built on first use.
    pub(crate) fn grammar(&self) -> Result<Arc<GrammarEnv>> {
        self.text
            .grammar
            .get_or_init(|| {
                GrammarEnv::new(
                    &self.text.tokenizer,
                    self.active().info.vocab_size,
                    &self.text.eos_ids,
                )
                .map(Arc::new)
            })
            .clone()
            .map_err(RuntimeError::InvalidRequest)
    }

    /// Runs a stateless request (embed, rerank); on a device error, moves to the
    /// next device and runs the same request there. Request errors are not retried.
    pub fn run<T>(
        &self,
        f: impl Fn(&dyn InferenceBackend) -> std::result::Result<T, BackendError>,
    ) -> Result<T> {
        self.maybe_fail_back();
        loop {
            let (backend, epoch, idx) = self.current();
            let device = self.candidates[idx].device;
            match contain(device, || f(backend.as_ref())) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_device_error() => self.fail_over(epoch, &e)?,
                Err(e) => return Err(self.backend_error(idx, e)),
            }
        }
    }

    /// Appends `tokens` to a sequence and returns the next-token logits. If the
    /// device fails, the sequence is re-prefilled (every token it held, then
    /// `tokens`) on the next device: the caller sees no difference. One-token decode
    /// steps of concurrent sequences run as one batch where the backend batches
    /// (see [`step_batch`]).
    pub fn feed(&self, seq: &mut Sequence, tokens: &[u32]) -> Result<Vec<f32>> {
        self.maybe_fail_back();
        loop {
            let (backend, epoch, idx) = self.current();
            let device = self.candidates[idx].device;
            let cached = matches!(&seq.cache, Some((e, _)) if *e == epoch);
            if cached && tokens.len() == 1 && backend.batches_steps() {
                let Some((_, cache)) = seq.cache.take() else {
                    continue;
                };
                if seq.member.is_none() {
                    seq.member = Some(self.steps.join());
                }
                let out = self.steps.step(&backend, epoch, device, cache, tokens);
                match (out.result, out.cache) {
                    (Ok(logits), Some(cache)) => {
                        seq.cache = Some((epoch, cache));
                        seq.tokens.extend_from_slice(tokens);
                        return Ok(logits);
                    }
                    // The cache stays dropped: the next round re-prefills this
                    // sequence alone, and only a faulty sequence sees its error.
                    (Ok(_), None) | (Err(StepError::RetryAlone), _) => continue,
                    (Err(StepError::Backend(e)), _) if e.is_device_error() => {
                        self.fail_over(epoch, &e)?;
                        continue;
                    }
                    (Err(StepError::Backend(e)), _) => return Err(self.backend_error(idx, e)),
                }
            }
            let result = contain(device, || {
                let fresh = !matches!(&seq.cache, Some((e, _)) if *e == epoch);
                if fresh {
                    seq.cache = None;
                    let mut cache = backend.new_cache()?;
                    let mut all = seq.tokens.clone();
                    all.extend_from_slice(tokens);
                    let logits = backend.forward(cache.as_mut(), &all)?;
                    seq.cache = Some((epoch, cache));
                    Ok(logits)
                } else {
                    let (_, cache) = seq
                        .cache
                        .as_mut()
                        .ok_or_else(|| BackendError::internal("sequence cache disappeared"))?;
                    backend.forward(cache.as_mut(), tokens)
                }
            });
            match result {
                Ok(logits) => {
                    seq.tokens.extend_from_slice(tokens);
                    return Ok(logits);
                }
                Err(e) => {
                    // The cache may hold part of `tokens`: never reuse it.
                    seq.cache = None;
                    if e.is_device_error() {
                        self.fail_over(epoch, &e)?;
                    } else {
                        return Err(self.backend_error(idx, e));
                    }
                }
            }
        }
    }
}

/// The state of one generated sequence: its KV cache (on the backend that made it)
/// and the tokens it holds.
#[derive(Default)]
pub(crate) struct Sequence {
    cache: Option<(u64, Box<dyn KvCache>)>,
    tokens: Vec<u32>,
    /// Set while the sequence decodes through the step batcher.
    member: Option<Member>,
}

impl Sequence {
    /// The tokens the sequence holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Marks the end of a generation: the step batcher stops waiting for this
    /// sequence (a chat session keeps its sequence, idle, between turns).
    pub fn end_generation(&mut self) {
        self.member = None;
    }

    /// Keeps the first `len` tokens (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(len);
        if let Some((_, cache)) = self.cache.as_mut()
            && cache.truncate(len).is_err()
        {
            self.cache = None;
        }
    }
}

/// One line per attempt: `backend on device: reason`.
pub(crate) fn format_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| match &a.failure {
            Some(f) => format!("  - {} on {}: {f}", a.backend, a.device),
            None => format!("  - {} on {}: loaded", a.backend, a.device),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
