//! A fault-injecting backend, registered through inventory inside the test binary.
//!
//! `fault-test` serves embed, rerank and generate for any `bert`/`qwen2`
//! safetensors model directory, computing deterministic fake outputs from the
//! token ids alone (so every device gives the same numbers). Its behaviour is set
//! by the manifest's `[models.options]`:
//! - `gpu_load = "unavailable" | "panic" | "oom"`: what loading on a GPU does;
//! - `load = "invalid"`: loading fails with an invalid-model error on any device;
//! - `gpu_fail_call = "N"` and `gpu_fail_kind = "oom" | "lost"`: the N-th call
//!   (embed, rerank or forward) of a GPU instance fails;
//! - `script = "id,id,..."`: generation emits these ids in a cycle (the next id
//!   is `script[cache_len % len]`);
//! - `reject_len = "N"`: inputs of exactly N tokens are invalid input;
//! - `feed_delay_ms = "N"`: every `forward` call takes N ms (a slow prefill or step);
//! - `context = "N"`: the context length (`max_positions`, default 512).
//!
//! Counters (per model id) record loads and calls, so tests can assert that a
//! request error was not retried.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gllm_api::{
    BackendError, BackendFactory, Capabilities, Device, DeviceKind, EncodedInput, InferenceBackend,
    KvCache, ModelInfo, ModelSpec, Task, WeightFormat,
};

pub const VOCAB: usize = 151_936;

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub loads: Vec<String>,
    pub calls: usize,
    /// Tokens fed to `forward`, over all caches.
    pub fed: usize,
    /// The first tokens fed to the last fresh cache (up to 16).
    pub first_fed: Vec<u32>,
}

fn counters() -> &'static Mutex<HashMap<String, Counters>> {
    static C: OnceLock<Mutex<HashMap<String, Counters>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The counters recorded for a model id.
pub fn counters_of(id: &str) -> Counters {
    counters()
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .unwrap_or_default()
}

fn record(id: &str, f: impl FnOnce(&mut Counters)) {
    f(counters()
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default());
}

pub struct FaultFactory {
    pub name: &'static str,
    /// When false, `probe` reports GPUs as unavailable (a CPU-only build).
    pub gpu_probe_ok: bool,
}

pub static FAULT: FaultFactory = FaultFactory {
    name: "fault-test",
    gpu_probe_ok: true,
};
pub static FAULT_CPU_ONLY: FaultFactory = FaultFactory {
    name: "fault-cpu-only",
    gpu_probe_ok: false,
};
gllm_api::inventory::submit! { gllm_api::Registration::new(&FAULT) }
gllm_api::inventory::submit! { gllm_api::Registration::new(&FAULT_CPU_ONLY) }

impl BackendFactory for FaultFactory {
    fn name(&self) -> &str {
        self.name
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tasks: vec![Task::Embed, Task::Rerank, Task::Generate],
            architectures: vec!["bert".into(), "qwen2".into()],
            formats: vec![WeightFormat::Safetensors],
            devices: vec![DeviceKind::Cpu, DeviceKind::Gpu],
        }
    }
    fn probe(&self, device: Device) -> Result<(), BackendError> {
        if device.kind == DeviceKind::Gpu && !self.gpu_probe_ok {
            return Err(BackendError::device_unavailable("no GPU adapter found"));
        }
        Ok(())
    }
    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        record(&spec.id, |c| c.loads.push(device.to_string()));
        let opt = |k: &str| spec.options.get(k).map(String::as_str);
        if opt("load") == Some("invalid") {
            return Err(BackendError::invalid_model(
                "tensor `embeddings.word_embeddings.weight` is missing",
            ));
        }
        if device.kind == DeviceKind::Gpu {
            if !self.gpu_probe_ok {
                return Err(BackendError::device_unavailable("no GPU adapter found"));
            }
            match opt("gpu_load") {
                Some("unavailable") => {
                    return Err(BackendError::device_unavailable("no GPU adapter found"));
                }
                Some("oom") => {
                    return Err(BackendError::out_of_memory("weights do not fit in 0 bytes"));
                }
                Some("panic") => panic!("No possible adapter available for backend"),
                _ => {}
            }
        }
        let fail_call = if device.kind == DeviceKind::Gpu {
            opt("gpu_fail_call").and_then(|n| n.parse().ok())
        } else {
            None
        };
        let fail_kind = match opt("gpu_fail_kind") {
            Some("lost") => gllm_api::ErrorKind::DeviceLost,
            _ => gllm_api::ErrorKind::OutOfMemory,
        };
        let script: Vec<u32> = opt("script")
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default();
        Ok(Box::new(FaultBackend {
            id: spec.id.clone(),
            task: spec.task,
            device,
            fail_call,
            fail_kind,
            calls: AtomicUsize::new(0),
            script: Arc::new(script),
            reject_len: opt("reject_len").and_then(|n| n.parse().ok()),
            // `batches = "true"`: concurrent decode steps go through the runtime's
            // step batcher (forward_batch stays the default, one call per sequence).
            batches: opt("batches") == Some("true"),
            context: opt("context").and_then(|n| n.parse().ok()).unwrap_or(512),
            feed_delay: std::time::Duration::from_millis(
                opt("feed_delay_ms")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
        }))
    }
}

struct FaultBackend {
    id: String,
    task: Task,
    device: Device,
    fail_call: Option<usize>,
    fail_kind: gllm_api::ErrorKind,
    calls: AtomicUsize,
    script: Arc<Vec<u32>>,
    reject_len: Option<usize>,
    feed_delay: std::time::Duration,
    context: usize,
    batches: bool,
}

impl FaultBackend {
    fn call(&self) -> Result<(), BackendError> {
        record(&self.id, |c| c.calls += 1);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_call == Some(n) {
            return Err(BackendError::new(
                self.fail_kind,
                format!("injected failure on call {n}"),
            ));
        }
        Ok(())
    }
    fn check(&self, input: &EncodedInput) -> Result<(), BackendError> {
        if Some(input.ids.len()) == self.reject_len {
            return Err(BackendError::invalid_input(format!(
                "inputs of {} tokens are rejected",
                input.ids.len()
            )));
        }
        Ok(())
    }
}

/// The fake embedding: [token count, sum of ids, first id, sum of type ids].
pub fn fake_embedding(input: &EncodedInput) -> Vec<f32> {
    vec![
        input.ids.len() as f32,
        input.ids.iter().map(|&i| i as f32).sum(),
        input.ids.first().copied().unwrap_or(0) as f32,
        input.type_ids.iter().map(|&i| i as f32).sum(),
    ]
}

struct FaultCache {
    len: usize,
}

impl KvCache for FaultCache {
    fn len(&self) -> usize {
        self.len
    }
    fn truncate(&mut self, len: usize) -> Result<(), BackendError> {
        if len > self.len {
            return Err(BackendError::invalid_input(
                "cannot grow a cache by truncating",
            ));
        }
        self.len = len;
        Ok(())
    }
}

impl InferenceBackend for FaultBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            task: self.task,
            device: self.device,
            dtype: gllm_api::DType::F32,
            max_positions: self.context,
            vocab_size: VOCAB,
            output_dim: match self.task {
                Task::Embed => 4,
                Task::Rerank => 1,
                Task::Generate => VOCAB,
            },
        }
    }
    fn embed(&self, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.call()?;
        inputs
            .iter()
            .map(|i| self.check(i).map(|_| fake_embedding(i)))
            .collect()
    }
    fn rerank(&self, pairs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.call()?;
        pairs
            .iter()
            .map(|p| {
                self.check(p)?;
                Ok(vec![(p.ids.len() as f32 - 10.0) / 4.0])
            })
            .collect()
    }
    fn new_cache(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Ok(Box::new(FaultCache { len: 0 }))
    }
    fn forward(&self, cache: &mut dyn KvCache, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        self.call()?;
        std::thread::sleep(self.feed_delay);
        record(&self.id, |c| c.fed += tokens.len());
        let cache = gllm_api::downcast_cache::<FaultCache>(cache)?;
        if tokens.is_empty() {
            return Err(BackendError::invalid_input("no tokens to feed"));
        }
        if cache.len == 0 {
            let first = tokens[..tokens.len().min(16)].to_vec();
            record(&self.id, |c| c.first_fed = first);
        }
        cache.len += tokens.len();
        let next = if self.script.is_empty() {
            (tokens[tokens.len() - 1] as usize * 31 + cache.len * 7) % 1000 + 200
        } else {
            self.script[cache.len % self.script.len()] as usize
        };
        let mut logits = vec![0.0f32; VOCAB];
        logits[next] = 10.0;
        // a runner-up, so that sampling has something to choose from
        logits[(next + 1) % VOCAB] = 9.0;
        Ok(logits)
    }
    fn batches_steps(&self) -> bool {
        self.batches
    }
}

/// Writes a manifest to a temp file and opens a runtime on it.
/// Keeps the built-in backend crates linked (the runtime references none): their
/// inventory registrations then reach `Registry::builtin`.
pub fn link_backends() {
    std::hint::black_box(&burn_bert::FACTORY);
    std::hint::black_box(&candle_qwen2::FACTORY);
    std::hint::black_box(&burn_qwen2::FACTORY);
}

pub fn runtime(manifest: &str) -> gllm_runtime::Runtime {
    link_backends();
    let dir = std::env::temp_dir().join(format!(
        "gllm-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("models.toml");
    std::fs::write(&path, manifest).unwrap();
    gllm_runtime::Runtime::from_manifest_file(&path).unwrap()
}

/// A runtime serving the tiny-qwen2 fixture as `qwen` on `backend`, CPU only.
pub fn tiny_qwen2_runtime(backend: &str) -> gllm_runtime::Runtime {
    decoder_runtime(&fixture_path("tiny-qwen2"), backend)
}

/// A runtime serving the decoder at `path` (a fixture directory or GGUF file) as
/// `qwen` on `backend`, CPU only.
pub fn decoder_runtime(path: &str, backend: &str) -> gllm_runtime::Runtime {
    runtime(&format!(
        "[[models]]\nid = \"qwen\"\ntask = \"generate\"\npath = \"{path}\"\nbackends = [\"{backend}\"]\ndevices = [\"cpu\"]\n"
    ))
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `../shared/fixtures/NAME` as a manifest path string.
pub fn fixture_path(name: &str) -> String {
    gllm_testkit::fixture(name).display().to_string()
}
