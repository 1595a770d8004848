//! What every handler shares: the runtime, the options, the metrics, and the
//! loaded models (each embedding/rerank model with its batch queue, each
//! generation model with its admission control).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use gllm_runtime::api::Task;
use gllm_runtime::{ActiveBackend, EmbedderHandle, GeneratorHandle, RerankerHandle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ServeOptions;
use crate::batching::{BatchQueue, EmbedJob, EmbedWorker, RerankJob, RerankWorker};
use crate::error::{ApiError, ServerError};
use crate::metrics::{Metrics, ModelGauges};

/// An embedding model with its batch queue.
pub(crate) struct EmbedModel {
    pub id: String,
    pub handle: EmbedderHandle,
    pub queue: BatchQueue<EmbedJob>,
}

/// A cross-encoder with its batch queue.
pub(crate) struct RerankModel {
    pub id: String,
    pub handle: RerankerHandle,
    pub queue: BatchQueue<RerankJob>,
}

/// The server's KV cache memory budget, in KiB permits.
pub(crate) struct KvBudget {
    kib: Arc<Semaphore>,
    total_kib: usize,
    bytes_per_token: usize,
}

impl KvBudget {
    /// Takes room for `tokens` positions (a generation's prompt plus `max_tokens`).
    fn take(&self, model: &str, tokens: usize) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let need = tokens
            .saturating_mul(self.bytes_per_token)
            .div_ceil(1024)
            .max(1);
        let mib = |kib: usize| kib as f64 / 1024.0;
        if need > self.total_kib {
            return Err(ApiError::invalid_param(
                "max_tokens",
                format!(
                    "this generation needs {:.1} MiB of KV cache for its prompt and max_tokens, \
                     more than the server's whole budget ({:.1} MiB): lower max_tokens or shorten the prompt",
                    mib(need),
                    mib(self.total_kib)
                ),
            )
            .for_model(model));
        }
        let n = u32::try_from(need)
            .map_err(|_| ApiError::kv_full(model, mib(need), mib(self.total_kib)))?;
        self.kib
            .clone()
            .try_acquire_many_owned(n)
            .map(Some)
            .map_err(|_| ApiError::kv_full(model, mib(need), mib(self.total_kib)))
    }
}

/// A decoder: `slots` generations run at once, `admission` bounds running + waiting.
pub(crate) struct GenModel {
    pub id: String,
    pub handle: GeneratorHandle,
    /// The KV budget this model's generations draw from (none when the server has no
    /// budget or the backend does not report its KV size).
    pub kv: Option<KvBudget>,
    admission: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    max_active: usize,
    max_total: usize,
}

/// Held for the whole life of one generation (its stream included).
pub(crate) struct GenPermit {
    _admission: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
    /// Its share of the KV cache budget (KiB), when there is one.
    _kv: Option<OwnedSemaphorePermit>,
}

impl GenModel {
    /// Takes `kv_kib` of the KV budget (429 when it has no room now, 400 when it never
    /// would), a place in the queue (429 when full), then waits for a slot.
    pub async fn admit(&self, kv: Option<(&KvBudget, usize)>) -> Result<GenPermit, ApiError> {
        let kv = match kv {
            Some((budget, tokens)) => budget.take(&self.id, tokens)?,
            None => None,
        };
        let admission = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::queue_full(&self.id))?;
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| {
            ApiError::unavailable("the server is shutting down").for_model(&self.id)
        })?;
        Ok(GenPermit {
            _admission: admission,
            _slot: slot,
            _kv: kv,
        })
    }

    fn active(&self) -> usize {
        self.max_active
            .saturating_sub(self.slots.available_permits())
    }

    fn waiting(&self) -> usize {
        self.max_total
            .saturating_sub(self.admission.available_permits())
            .saturating_sub(self.active())
    }
}

/// A loaded model of any task.
pub(crate) enum Served {
    Embed(EmbedModel),
    Rerank(RerankModel),
    Generate(GenModel),
}

impl Served {
    pub fn id(&self) -> &str {
        match self {
            Self::Embed(m) => &m.id,
            Self::Rerank(m) => &m.id,
            Self::Generate(m) => &m.id,
        }
    }

    pub fn task(&self) -> Task {
        match self {
            Self::Embed(_) => Task::Embed,
            Self::Rerank(_) => Task::Rerank,
            Self::Generate(_) => Task::Generate,
        }
    }

    pub fn active(&self) -> ActiveBackend {
        match self {
            Self::Embed(m) => m.handle.active(),
            Self::Rerank(m) => m.handle.active(),
            Self::Generate(m) => m.handle.active(),
        }
    }

    fn gauges(&self) -> ModelGauges {
        let active = self.active();
        let (queue_depth, queue_capacity, active_generations) = match self {
            Self::Embed(m) => (m.queue.depth(), m.queue.capacity(), None),
            Self::Rerank(m) => (m.queue.depth(), m.queue.capacity(), None),
            Self::Generate(m) => (m.waiting(), m.max_total - m.max_active, Some(m.active())),
        };
        ModelGauges {
            id: self.id().to_string(),
            task: self.task().as_str(),
            backend: active.backend,
            device: active.device.to_string(),
            fallbacks: active.fallbacks,
            decode_batches: active.step_batches,
            decode_batched_steps: active.batched_steps,
            queue_depth,
            queue_capacity,
            active_generations,
            prompt_cache: match self {
                Self::Generate(m) => m.handle.prompt_cache_stats(),
                _ => None,
            },
        }
    }
}

/// The server's shared state.
pub(crate) struct AppState {
    pub runtime: Runtime,
    pub options: ServeOptions,
    pub metrics: Arc<Metrics>,
    models: OnceLock<Vec<Served>>,
    /// Unix time the server started (the `created` of `/v1/models`).
    pub started: u64,
    next_id: AtomicU64,
    /// The KV cache budget shared by every generation model, in KiB permits.
    kv_budget: Option<Arc<Semaphore>>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AppState {
    pub fn new(runtime: Runtime, options: ServeOptions) -> Self {
        let options_kv_kib = (options.kv_budget_bytes / 1024).min(Semaphore::MAX_PERMITS);
        Self {
            runtime,
            options,
            metrics: Arc::default(),
            models: OnceLock::new(),
            started: unix_now(),
            next_id: AtomicU64::new(1),
            kv_budget: (options_kv_kib > 0).then(|| Arc::new(Semaphore::new(options_kv_kib))),
        }
    }

    /// A fresh response id: `prefix-<start time><counter>` in hex.
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.started)
    }

    /// Loads every model of the manifest, in manifest order, and starts its batcher.
    pub async fn load_all(&self) -> Result<(), ServerError> {
        let mut served = Vec::new();
        for entry in &self.runtime.manifest().models {
            let id = entry.id.clone();
            let load_err = |source| ServerError::Load {
                id: id.clone(),
                source: Box::new(source),
            };
            let model = match entry.task {
                Task::Embed => {
                    let handle = self.runtime.embedder(&id).await.map_err(load_err)?;
                    let queue = BatchQueue::spawn(
                        &id,
                        self.options.max_queue,
                        self.options.max_batch_tokens,
                        EmbedWorker {
                            handle: handle.clone(),
                        },
                        self.metrics.clone(),
                    );
                    Served::Embed(EmbedModel {
                        id: id.clone(),
                        handle,
                        queue,
                    })
                }
                Task::Rerank => {
                    let handle = self.runtime.reranker(&id).await.map_err(load_err)?;
                    let queue = BatchQueue::spawn(
                        &id,
                        self.options.max_queue,
                        self.options.max_batch_tokens,
                        RerankWorker {
                            handle: handle.clone(),
                        },
                        self.metrics.clone(),
                    );
                    Served::Rerank(RerankModel {
                        id: id.clone(),
                        handle,
                        queue,
                    })
                }
                Task::Generate => {
                    let handle = self.runtime.generator(&id).await.map_err(load_err)?;
                    if self.options.prompt_cache_bytes > 0 {
                        handle.enable_prompt_cache(self.options.prompt_cache_bytes);
                    }
                    let max_active = self.options.max_concurrent_generations;
                    let max_total = max_active + self.options.max_queue;
                    let kv = match (self.kv_budget.as_ref(), handle.kv_bytes_per_token()) {
                        (Some(kib), Some(bytes_per_token)) if bytes_per_token > 0 => {
                            Some(KvBudget {
                                kib: kib.clone(),
                                total_kib: self.options.kv_budget_bytes / 1024,
                                bytes_per_token,
                            })
                        }
                        _ => None,
                    };
                    Served::Generate(GenModel {
                        id: id.clone(),
                        kv,
                        handle,
                        admission: Arc::new(Semaphore::new(max_total)),
                        slots: Arc::new(Semaphore::new(max_active)),
                        max_active,
                        max_total,
                    })
                }
            };
            let active = model.active();
            eprintln!(
                "gllm serve: model `{id}` ({}) loaded on {}/{}",
                entry.task.as_str(),
                active.backend,
                active.device
            );
            served.push(model);
        }
        let n = served.len();
        if self.models.set(served).is_err() {
            return Err(ServerError::Options("models were loaded twice".into()));
        }
        eprintln!("gllm serve: ready ({n} models)");
        Ok(())
    }

    /// The loaded models, or 503 while loading.
    pub fn models(&self) -> Result<&[Served], ApiError> {
        self.models
            .get()
            .map(Vec::as_slice)
            .ok_or_else(ApiError::loading)
    }

    pub fn is_ready(&self) -> bool {
        self.models.get().is_some()
    }

    /// The model a request names, checked against the task; without a name, the
    /// only model of that task.
    fn find(&self, requested: Option<&str>, task: Task) -> Result<&Served, ApiError> {
        let models = self.models()?;
        match requested {
            Some(id) => {
                let m = models.iter().find(|m| m.id() == id).ok_or_else(|| {
                    let known: Vec<&str> = models.iter().map(Served::id).collect();
                    ApiError::model_not_found(id, &known.join(", "))
                })?;
                if m.task() != task {
                    let mut e = ApiError::invalid_param(
                        "model",
                        format!(
                            "model `{id}` is a `{}` model; this endpoint needs a `{}` model",
                            m.task().as_str(),
                            task.as_str()
                        ),
                    );
                    e.code = Some("wrong_task");
                    return Err(e.for_model(id));
                }
                Ok(m)
            }
            None => {
                let mut of_task = models.iter().filter(|m| m.task() == task);
                match (of_task.next(), of_task.next()) {
                    (Some(m), None) => Ok(m),
                    (None, _) => Err(ApiError::invalid_param(
                        "model",
                        format!("this server has no `{}` model", task.as_str()),
                    )),
                    (Some(_), Some(_)) => Err(ApiError::invalid_param(
                        "model",
                        format!(
                            "`model` is required: this server has several `{}` models",
                            task.as_str()
                        ),
                    )),
                }
            }
        }
    }

    pub fn embedder(&self, requested: Option<&str>) -> Result<&EmbedModel, ApiError> {
        match self.find(requested, Task::Embed)? {
            Served::Embed(m) => Ok(m),
            _ => Err(ApiError::internal("model table inconsistent")),
        }
    }

    pub fn reranker(&self, requested: Option<&str>) -> Result<&RerankModel, ApiError> {
        match self.find(requested, Task::Rerank)? {
            Served::Rerank(m) => Ok(m),
            _ => Err(ApiError::internal("model table inconsistent")),
        }
    }

    pub fn generator(&self, requested: Option<&str>) -> Result<&GenModel, ApiError> {
        match self.find(requested, Task::Generate)? {
            Served::Generate(m) => Ok(m),
            _ => Err(ApiError::internal("model table inconsistent")),
        }
    }

    /// The metrics text, with per-model gauges.
    pub fn render_metrics(&self) -> String {
        let gauges: Vec<ModelGauges> = self
            .models
            .get()
            .map(|ms| ms.iter().map(Served::gauges).collect())
            .unwrap_or_default();
        self.metrics.render(self.is_ready(), &gauges)
    }
}
