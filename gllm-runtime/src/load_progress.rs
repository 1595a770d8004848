//! Process-wide reports of how far model loads have got, for progress bars.
//!
//! Backends that support it ([`gllm_api::BackendFactory::load_with_progress`]:
//! the built-in ones) report the bytes of weights they have read and converted;
//! the runtime passes each report on, with the model and the candidate, to the
//! handler installed here. The CLI draws them as a bar on a terminal.

use std::sync::{Arc, RwLock};

use gllm_api::{Device, LoadProgress};

/// One report of a load in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadEvent<'a> {
    /// The model's id.
    pub model: &'a str,
    /// The backend loading it.
    pub backend: &'a str,
    /// The device it loads on.
    pub device: Device,
    /// Bytes of weights read so far.
    pub done: u64,
    /// Bytes of weights the load reads in all (0 until the backend has said).
    pub total: u64,
    /// The attempt is over (loaded or failed); a fallback may start another.
    pub finished: bool,
}

/// A load progress handler. It is called on the loading thread, once per tensor:
/// keep it cheap.
pub type LoadProgressHandler = Arc<dyn Fn(&LoadEvent<'_>) + Send + Sync>;

static HANDLER: RwLock<Option<LoadProgressHandler>> = RwLock::new(None);

/// Installs the process-wide load progress handler (`None` removes it).
pub fn set_load_progress_handler(handler: Option<LoadProgressHandler>) {
    match HANDLER.write() {
        Ok(mut h) => *h = handler,
        Err(poisoned) => *poisoned.into_inner() = handler,
    }
}

fn handler() -> Option<LoadProgressHandler> {
    match HANDLER.read() {
        Ok(h) => h.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Runs `load` (one load attempt of `model` by `backend` on `device`) with a
/// reporter that forwards to the installed handler, then reports the end.
pub(crate) fn reporting<T>(
    model: &str,
    backend: &str,
    device: Device,
    load: impl FnOnce(LoadProgress) -> T,
) -> T {
    let Some(h) = handler() else {
        return load(LoadProgress::none());
    };
    let (m, b) = (model.to_string(), backend.to_string());
    let forward = h.clone();
    let progress = LoadProgress::new(move |done, total| {
        forward(&LoadEvent {
            model: &m,
            backend: &b,
            device,
            done,
            total,
            finished: false,
        })
    });
    let out = load(progress);
    h(&LoadEvent {
        model,
        backend,
        device,
        done: 0,
        total: 0,
        finished: true,
    });
    out
}
