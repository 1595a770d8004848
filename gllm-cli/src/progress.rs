//! Progress on standard error: a bar while a model loads (bytes of weights read
//! and repacked, as the backend reports them; a spinner until it has said how
//! many) and, in builds with the `download` feature, a bar per file downloaded
//! from the Hugging Face Hub. Bars are drawn on a terminal only; without one, one
//! line per large download says what is being downloaded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use gllm_runtime::load_progress::{LoadEvent, set_load_progress_handler};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every bar of the process, so that the load and download bars share the screen.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// The bars of models being loaded, by model id.
fn loads() -> &'static Mutex<HashMap<String, ProgressBar>> {
    static LOADS: OnceLock<Mutex<HashMap<String, ProgressBar>>> = OnceLock::new();
    LOADS.get_or_init(Default::default)
}

fn style(bar: &ProgressBar, template: &str) {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
}

/// Moves a model's bar to the event's position, turning the spinner into a bar
/// once the backend has said how many bytes it reads.
fn show_load(e: &LoadEvent<'_>) {
    let Ok(loads) = loads().lock() else {
        return;
    };
    let Some(bar) = loads.get(e.model) else {
        return;
    };
    if e.finished || e.total == 0 {
        return;
    }
    if bar.length() != Some(e.total) {
        bar.set_length(e.total);
        style(
            bar,
            "loading {msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed}, eta {eta})",
        );
        bar.set_message(format!("{} on {} ({})", e.model, e.device, e.backend));
    }
    bar.set_position(e.done);
}

/// Awaits `load` with a progress bar naming the model.
pub async fn loading<T>(
    model: &str,
    load: impl Future<Output = gllm_runtime::Result<T>>,
) -> gllm_runtime::Result<T> {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| set_load_progress_handler(Some(Arc::new(show_load))));
    let bar = bars().add(ProgressBar::new_spinner());
    style(&bar, "{spinner} loading {msg} ({elapsed})");
    bar.set_message(model.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    if let Ok(mut loads) = loads().lock() {
        loads.insert(model.to_string(), bar.clone());
    }
    let result = load.await;
    if let Ok(mut loads) = loads().lock() {
        loads.remove(model);
    }
    bar.finish_and_clear();
    #[cfg(feature = "download")]
    downloads::clear();
    result
}

#[cfg(feature = "download")]
pub use downloads::show_downloads;

#[cfg(feature = "download")]
mod downloads {
    use std::collections::HashMap;
    use std::io::IsTerminal;
    use std::sync::{Arc, Mutex, OnceLock};

    use gllm_runtime::hub::DownloadProgress;
    use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

    /// Files at least this large get a line when stderr is not a terminal.
    const ANNOUNCE_BYTES: u64 = 1 << 20;

    type Bars = Mutex<HashMap<(String, String), ProgressBar>>;

    /// The bars of downloads in progress, by (repo, file).
    fn active() -> &'static Bars {
        static ACTIVE: OnceLock<Bars> = OnceLock::new();
        ACTIVE.get_or_init(Default::default)
    }

    /// Removes the bars of downloads that ended without finishing (a failed load).
    pub fn clear() {
        if let Ok(mut a) = active().lock() {
            for (_, bar) in a.drain() {
                bar.finish_and_clear();
            }
        }
    }

    /// Turns the runtime's download progress events into progress bars.
    pub fn show_downloads() {
        let terminal = std::io::stderr().is_terminal();
        gllm_runtime::hub::set_progress_handler(Some(Arc::new(move |p: &DownloadProgress<'_>| {
            if terminal {
                update(p);
            } else if p.done == 0 && !p.finished && p.total.is_none_or(|t| t >= ANNOUNCE_BYTES) {
                let size = p
                    .total
                    .map_or_else(String::new, |t| format!(" ({})", HumanBytes(t)));
                eprintln!("gllm: downloading {}/{}{size}", p.repo, p.file);
            }
        })));
    }

    fn update(p: &DownloadProgress<'_>) {
        let Ok(mut a) = active().lock() else {
            return;
        };
        let key = (p.repo.to_string(), p.file.to_string());
        if p.finished {
            if let Some(bar) = a.remove(&key) {
                bar.finish_and_clear();
            }
            return;
        }
        let bar = a.entry(key).or_insert_with(|| {
            let bar = match p.total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let template = if p.total.is_some() {
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{spinner} {msg} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("downloading {}/{}", p.repo, p.file));
            super::bars().add(bar)
        });
        bar.set_position(p.done);
    }
}
