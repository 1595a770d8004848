//! What the loader and server fuzz targets share: a scratch directory per process
//! (in /dev/shm where there is one) for the files a target writes from its input,
//! the specs of the built-in backends, and one forward pass over a model that loaded.

use std::path::{Path, PathBuf};

use gllm_api::{BackendFactory, Device, EncodedInput, ModelSpec, Task, WeightFormat};

/// This process's scratch directory, emptied of the previous input's files.
pub fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("gllm-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Prints `message()` when `GLLM_FUZZ_DEBUG` is set: why an input did not load, or
/// what an endpoint answered, to check that the seeds get through.
pub fn debug(message: impl FnOnce() -> String) {
    if std::env::var_os("GLLM_FUZZ_DEBUG").is_some() {
        eprintln!("{}", message());
    }
}

/// A spec for `task` on the CPU, with no options.
pub fn spec(task: Task, path: PathBuf, format: WeightFormat, architecture: &str) -> ModelSpec {
    ModelSpec {
        id: "fuzz".into(),
        task,
        path,
        format,
        architecture: architecture.into(),
        dtype: None,
        options: Default::default(),
    }
}

/// Loads `spec` with `factory` on the CPU and, when it loads, runs one small input of
/// its task. Errors are expected; a panic (caught by the backend or not) aborts, since
/// libFuzzer's panic hook sees it first.
pub fn load_and_run(factory: &dyn BackendFactory, spec: &ModelSpec) {
    let model = match factory.load(spec, Device::CPU) {
        Ok(m) => m,
        Err(e) => {
            debug(|| format!("load: {e}"));
            return;
        }
    };
    let info = model.info();
    if info.vocab_size == 0 {
        return;
    }
    let ids: Vec<u32> = [0u32, 1, 2]
        .iter()
        .map(|&i| i % info.vocab_size as u32)
        .collect();
    match spec.task {
        Task::Embed => {
            let _ = model.embed(&[
                EncodedInput::new(ids.clone()),
                EncodedInput::new(ids[..1].to_vec()),
            ]);
        }
        Task::Rerank => {
            let _ = model.rerank(&[EncodedInput::new(ids)]);
        }
        _ => {
            if let Ok(mut cache) = model.new_cache() {
                if model.forward(cache.as_mut(), &ids).is_ok() {
                    let _ = model.forward(cache.as_mut(), &ids[..1]);
                }
            }
        }
    }
}
