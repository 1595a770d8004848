//! A spinner on standard error while a model loads (hidden when stderr is not a terminal).

use std::future::Future;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Awaits `load` with a spinner naming the model.
pub async fn loading<T>(
    model: &str,
    load: impl Future<Output = gllm_runtime::Result<T>>,
) -> gllm_runtime::Result<T> {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} loading {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(model.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    let result = load.await;
    bar.finish_and_clear();
    result
}
