//! The runtime: a manifest, the backends, and the models loaded so far.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use gllm_api::Device;

use crate::error::{Result, RuntimeError};
use crate::handles::{EmbedderHandle, GeneratorHandle, RerankerHandle};
use crate::manifest::{Manifest, ModelEntry};
use crate::model_files;
use crate::registry::Registry;
use crate::served::{Attempt, Candidate, ServedModel, contain, format_attempts};

/// One (backend, device) pair considered for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateReport {
    /// Backend name.
    pub backend: String,
    /// Device.
    pub device: Device,
    /// `None`: usable (the first usable one is where the model loads); else why it is skipped.
    pub skipped: Option<String>,
}

/// Where a model would load, and why earlier candidates would be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPlan {
    /// Model id.
    pub id: String,
    /// Task.
    pub task: gllm_api::Task,
    /// Weights (directory or file).
    pub path: String,
    /// Weight format.
    pub format: gllm_api::WeightFormat,
    /// Architecture.
    pub architecture: String,
    /// Every candidate in preference order.
    pub candidates: Vec<CandidateReport>,
}

impl ModelPlan {
    /// The first usable candidate.
    pub fn chosen(&self) -> Option<&CandidateReport> {
        self.candidates.iter().find(|c| c.skipped.is_none())
    }
}

/// One model's slot: locked while it loads, so that each model loads once.
type ModelSlot = Arc<Mutex<Option<Arc<ServedModel>>>>;

struct Inner {
    manifest: Manifest,
    registry: Registry,
    loaded: Mutex<HashMap<String, ModelSlot>>,
}

/// The entry point: cheap to clone, shared by every handle.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Reads a manifest file, with every built-in backend and the plugins named by
    /// the manifest's `[plugins]` table and by `GLLM_PLUGIN_PATH`.
    pub fn from_manifest_file(path: &Path) -> Result<Self> {
        Ok(Self::open(Some(path), &[])?.0)
    }

    /// A runtime over the manifest file `manifest` (or none: no entries, the built-in
    /// defaults), with every built-in backend and the plugins of the manifest and of
    /// `GLLM_PLUGIN_PATH`, and the models `models` names added by location where they
    /// are not ids of the manifest ([`Manifest::add_location`]: a directory, a `.gguf`
    /// file or `hf:org/name[:file]`, with the task given or read from its files).
    /// Returns the runtime and each of `models`' ids, in order.
    pub fn open(
        manifest: Option<&Path>,
        models: &[(&str, Option<gllm_api::Task>)],
    ) -> Result<(Self, Vec<String>)> {
        let mut registry = Registry::builtin();
        let mut libraries = Vec::new();
        let text = match manifest {
            Some(path) => {
                let text = Manifest::read(path)?;
                let origin = path.display().to_string();
                let base = path.parent().unwrap_or(Path::new("."));
                libraries.extend(Manifest::plugin_libraries(&text, &origin, base)?);
                Some((text, origin, base.to_path_buf()))
            }
            None => None,
        };
        libraries.extend(crate::plugin_host::plugin_path_libraries());
        for lib in libraries {
            registry.add(crate::plugin_host::load_plugin(&lib)?)?;
        }
        let mut manifest = match text {
            Some((text, origin, base)) => {
                Manifest::parse(&text, &origin, &base, &registry.names())?
            }
            None => Manifest::empty(),
        };
        let ids = models
            .iter()
            .map(|(spec, task)| manifest.add_location(spec, *task))
            .collect::<Result<Vec<_>>>()?;
        Ok((Self::new(manifest, registry), ids))
    }

    /// A runtime over a parsed manifest and a registry.
    pub fn new(manifest: Manifest, registry: Registry) -> Self {
        Self {
            inner: Arc::new(Inner {
                manifest,
                registry,
                loaded: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The backends.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Candidates device-first: every allowed backend on the first device, then the next device.
    fn candidates(
        &self,
        entry: &ModelEntry,
        spec: &gllm_api::ModelSpec,
    ) -> (Vec<Candidate>, Vec<CandidateReport>) {
        let mut usable = Vec::new();
        let mut report = Vec::new();
        let backends: Vec<_> = if entry.backends.is_empty() {
            self.registry().entries().to_vec()
        } else {
            entry
                .backends
                .iter()
                .filter_map(|n| self.registry().get(n).cloned())
                .collect()
        };
        for &device in &entry.devices {
            for b in &backends {
                let skipped = b.factory.capabilities().mismatch(spec, device);
                report.push(CandidateReport {
                    backend: b.name().to_string(),
                    device,
                    skipped: skipped.clone(),
                });
                if skipped.is_none() {
                    usable.push(Candidate {
                        backend: b.clone(),
                        device,
                    });
                }
            }
        }
        (usable, report)
    }

    /// Where a model would load without loading it: capabilities, then a device probe.
    pub fn plan(&self, id: &str) -> Result<ModelPlan> {
        let entry = self.manifest().model(id)?;
        let files = model_files::resolve(entry)?;
        let (_, mut report) = self.candidates(entry, &files.spec);
        for c in report.iter_mut().filter(|c| c.skipped.is_none()) {
            if let Some(b) = self.registry().get(&c.backend)
                && let Err(e) = contain(c.device, || b.factory.probe(c.device))
            {
                c.skipped = Some(e.to_string());
            }
        }
        Ok(ModelPlan {
            id: entry.id.clone(),
            task: entry.task,
            path: files.spec.path.display().to_string(),
            format: files.spec.format,
            architecture: files.spec.architecture.clone(),
            candidates: report,
        })
    }

    /// Loads a model (once; later calls share it), on the first candidate that works.
    pub(crate) fn load(&self, id: &str) -> Result<Arc<ServedModel>> {
        let entry = self.manifest().model(id)?.clone();
        let slot = {
            let mut loaded = self
                .inner
                .loaded
                .lock()
                .map_err(|_| RuntimeError::Internal("model table poisoned".into()))?;
            loaded.entry(entry.id.clone()).or_default().clone()
        };
        // One loader per model; other models load concurrently.
        let mut slot = slot
            .lock()
            .map_err(|_| RuntimeError::Internal("model slot poisoned".into()))?;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let files = model_files::resolve(&entry)?;
        let text = model_files::load_text_side(&entry, &files)?;
        let (candidates, report) = self.candidates(&entry, &files.spec);
        if candidates.is_empty() {
            return Err(RuntimeError::NoCandidate {
                id: entry.id.clone(),
                reasons: report
                    .iter()
                    .map(|c| {
                        format!(
                            "  - {} on {}: {}",
                            c.backend,
                            c.device,
                            c.skipped.as_deref().unwrap_or("usable")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        let mut attempts: Vec<Attempt> = Vec::new();
        let model = ServedModel::load(entry, files, text, candidates, &mut attempts)?;
        if attempts.len() > 1 {
            eprintln!(
                "gllm: model `{}` loaded after fallback:\n{}",
                model.entry.id,
                format_attempts(&attempts)
            );
        }
        let model = Arc::new(model);
        *slot = Some(model.clone());
        Ok(model)
    }

    async fn load_async(&self, id: &str) -> Result<Arc<ServedModel>> {
        let this = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || this.load(&id))
            .await
            .map_err(|e| RuntimeError::Internal(format!("loader failed: {e}")))?
    }

    /// An embedder for model `id` (loads it on first use).
    pub async fn embedder(&self, id: &str) -> Result<EmbedderHandle> {
        EmbedderHandle::new(self.load_async(id).await?)
    }

    /// A reranker for model `id`.
    pub async fn reranker(&self, id: &str) -> Result<RerankerHandle> {
        RerankerHandle::new(self.load_async(id).await?)
    }

    /// A generator for model `id`.
    pub async fn generator(&self, id: &str) -> Result<GeneratorHandle> {
        GeneratorHandle::new(self.load_async(id).await?)
    }

    /// [`Runtime::embedder`] without async (loads on the calling thread).
    pub fn embedder_blocking(&self, id: &str) -> Result<EmbedderHandle> {
        EmbedderHandle::new(self.load(id)?)
    }

    /// [`Runtime::reranker`] without async.
    pub fn reranker_blocking(&self, id: &str) -> Result<RerankerHandle> {
        RerankerHandle::new(self.load(id)?)
    }

    /// [`Runtime::generator`] without async.
    pub fn generator_blocking(&self, id: &str) -> Result<GeneratorHandle> {
        GeneratorHandle::new(self.load(id)?)
    }
}
