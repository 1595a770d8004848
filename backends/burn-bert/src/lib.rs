//! # burn-bert: BERT-family embeddings and cross-encoder reranking on Burn
//!
//! A gllm backend (`burn-bert`) for BERT, RoBERTa, XLM-RoBERTa and CamemBERT
//! encoders stored as Hugging Face safetensors directories:
//!
//! - `embed`: sentence-transformers models (`modules.json` → Pooling →
//!   Normalize), or mean pooling where there is no `modules.json`;
//! - `rerank`: `BertForSequenceClassification`, `RobertaForSequenceClassification`
//!   and `XLMRobertaForSequenceClassification` cross-encoders, returning raw logits.
//!
//! The family is read from `config.json`'s `model_type` ([`config::Family`]):
//! RoBERTa's positions start at `pad_token_id + 1` (so 514 position rows hold
//! 512 tokens) and its classification head has no pooler.
//!
//! It runs on the CPU through Burn's pure-Rust `flex` backend and on GPUs
//! through `wgpu`. Inputs are token ids; the backend sorts them by length,
//! pads each batch to its longest input, masks the padding, and spreads the
//! batches over the CPU's cores, so a row never depends on its batch.

pub mod attention;
mod batch;
pub mod config;
pub mod cpu;
pub mod model;
pub mod modules;
pub mod pooling;

/// gllm devices to Burn devices and panic containment, shared with the other Burn backends.
pub use burn_support::device;
/// Strict safetensors reading, shared with the other Burn backends.
pub use burn_support::weights;

use std::path::Path;

use gllm_api::{
    BackendError, BackendFactory, Capabilities, DType, Device, DeviceKind, EncodedInput,
    InferenceBackend, LoadProgress, ModelInfo, ModelSpec, Task, WeightFormat,
};

use crate::config::BertConfig;
use crate::model::{BertEncoder, Head};
use crate::modules::EmbedChain;
use crate::weights::WeightStore;

/// The factory of the `burn-bert` backend.
pub struct BurnBertFactory;

/// The registered factory instance.
pub static FACTORY: BurnBertFactory = BurnBertFactory;

gllm_api::inventory::submit! { gllm_api::Registration::new(&FACTORY) }

impl BackendFactory for BurnBertFactory {
    fn name(&self) -> &str {
        "burn-bert"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tasks: vec![Task::Embed, Task::Rerank],
            architectures: config::Family::MODEL_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            formats: vec![WeightFormat::Safetensors],
            devices: vec![DeviceKind::Cpu, DeviceKind::Gpu],
        }
    }

    fn probe(&self, device: Device) -> Result<(), BackendError> {
        device::probe(device)
    }

    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        Ok(Box::new(BurnBert::load(spec, device)?))
    }

    fn load_with_progress(
        &self,
        spec: &ModelSpec,
        device: Device,
        progress: LoadProgress,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        Ok(Box::new(BurnBert::load_with_progress(
            spec, device, progress,
        )?))
    }
}

/// Options read from the manifest's `options` table.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// Most inputs in one forward pass.
    batch_size: usize,
    /// Most tokens (inputs × padded length) in one forward pass.
    batch_tokens: usize,
    /// CPU threads that run batches side by side.
    threads: usize,
    /// CPU path with packed hidden states and fused host kernels (option `fused`, default true).
    fused: bool,
    /// The encoder layers' matmuls in int8 (option `quantize = "int8"`; CPU only).
    int8: bool,
}

impl Options {
    fn parse(spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        let get = |key: &str, default: usize| -> Result<usize, BackendError> {
            match spec.options.get(key) {
                None => Ok(default),
                Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    BackendError::invalid_input(format!(
                        "option `{key}` = `{v}` is not a positive integer"
                    ))
                }),
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match device.kind {
            DeviceKind::Cpu => get("threads", cores)?,
            DeviceKind::Gpu => 1,
        };
        let fused = match spec.options.get("fused").map(String::as_str) {
            None | Some("true") => device.kind == DeviceKind::Cpu,
            Some("false") => false,
            Some(v) => {
                return Err(BackendError::invalid_input(format!(
                    "option `fused` = `{v}` is not true or false"
                )));
            }
        };
        let int8 = match spec.options.get("quantize").map(String::as_str) {
            None | Some("none" | "f32") => false,
            Some("int8") if device.kind == DeviceKind::Cpu => true,
            Some("int8") => {
                return Err(BackendError::unsupported(format!(
                    "option `quantize` = `int8` runs on the CPU; on {device} burn-bert computes in f32 \
                     (drop the option, or load the model on the CPU)"
                )));
            }
            Some(v) => {
                return Err(BackendError::invalid_input(format!(
                    "option `quantize` = `{v}` is not `int8` (the one quantization burn-bert offers)"
                )));
            }
        };
        Ok(Self {
            int8,
            batch_size: get("batch_size", 32)?,
            batch_tokens: get("batch_tokens", 16384)?,
            threads,
            fused,
        })
    }
}

/// A loaded BERT-family model: an embedder or a cross-encoder.
pub struct BurnBert {
    encoder: BertEncoder,
    task: Task,
    device: Device,
    chain: Option<EmbedChain>,
    max_positions: usize,
    options: Options,
}

impl BurnBert {
    /// Loads the model of `spec` (a model directory) on `device`.
    pub fn load(spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        Self::load_with_progress(spec, device, LoadProgress::none())
    }

    /// [`Self::load`], reporting the bytes of weights read to `progress`.
    pub fn load_with_progress(
        spec: &ModelSpec,
        device: Device,
        progress: LoadProgress,
    ) -> Result<Self, BackendError> {
        let head = match spec.task {
            Task::Embed => Head::None,
            Task::Rerank => Head::Classifier,
            other => {
                return Err(BackendError::unsupported(format!(
                    "burn-bert does not serve task `{other}`"
                )));
            }
        };
        if spec.format != WeightFormat::Safetensors {
            return Err(BackendError::unsupported(format!(
                "burn-bert does not read {} weights",
                spec.format.as_str()
            )));
        }
        match spec.dtype {
            None | Some(DType::F32) => {}
            Some(other) => {
                return Err(BackendError::unsupported(format!(
                    "burn-bert computes in f32, not {}",
                    other.as_str()
                )));
            }
        }
        let options = Options::parse(spec, device)?;
        let chain = match spec.task {
            Task::Embed => Some(EmbedChain::load(&spec.path)?),
            _ => None,
        };
        let dir = chain
            .as_ref()
            .map_or(spec.path.as_path(), |c| c.transformer_dir.as_path());
        let config = BertConfig::load(dir)?;
        let mut store = WeightStore::open(dir)?;
        store.report_to(progress);
        let burn_device = device::burn_device(device)?;
        let encoder = device::contain_load(device, || {
            BertEncoder::load(
                &config,
                store,
                head,
                &burn_device,
                dir,
                options.fused,
                options.int8,
            )
        })?;
        let mut max_positions = config.max_input_len();
        if let Some(chain) = &chain {
            if let Some(width) = chain.pooling_width
                && width != config.hidden_size
            {
                return Err(BackendError::invalid_model(format!(
                    "{}: the Pooling module's word_embedding_dimension {width} does not match hidden_size {}",
                    spec.path.display(),
                    config.hidden_size
                )));
            }
            if let Some(m) = chain.max_seq_length {
                max_positions = max_positions.min(m);
            }
        }
        if head == Head::Classifier && encoder.num_labels() == 0 {
            return Err(BackendError::invalid_model(format!(
                "{}: the classifier has no labels",
                dir.display()
            )));
        }
        Ok(Self {
            encoder,
            task: spec.task,
            device,
            chain,
            max_positions,
            options,
        })
    }

    /// Loads the model in `dir` for `task` on `device` with default options
    /// (the family is read from `config.json`).
    pub fn load_dir(dir: &Path, task: Task, device: Device) -> Result<Self, BackendError> {
        let spec = ModelSpec {
            id: dir.display().to_string(),
            task,
            path: dir.to_path_buf(),
            format: WeightFormat::Safetensors,
            architecture: "bert".to_string(),
            dtype: None,
            options: Default::default(),
        };
        Self::load(&spec, device)
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &BertConfig {
        self.encoder.config()
    }

    /// The per-token `last_hidden_state` of one input run alone, row-major
    /// `[tokens, hidden]` (after truncation to [`ModelInfo::max_positions`]).
    pub fn last_hidden_state(&self, input: &EncodedInput) -> Result<Vec<f32>, BackendError> {
        let inputs = batch::checked(
            std::slice::from_ref(input),
            self.encoder.config(),
            self.max_positions,
        )?;
        let b = model::Batch {
            ids: vec![&inputs[0].0],
            type_ids: vec![&inputs[0].1],
        };
        self.run(|| Ok(self.encoder.hidden_states(&b)?.rows(0).to_vec()))
    }

    fn plan(&self) -> batch::Plan {
        batch::Plan {
            batch_size: self.options.batch_size,
            batch_tokens: self.options.batch_tokens,
            threads: self.options.threads,
            packed: self.options.fused,
        }
    }

    /// Runs `f`, turning a panic of Burn into an error of the right kind.
    fn run<T>(&self, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
        device::contain_run(self.device, f)
    }
}

impl InferenceBackend for BurnBert {
    fn info(&self) -> ModelInfo {
        let c = self.encoder.config();
        let output_dim = match &self.chain {
            Some(chain) => chain.pooling.count() * c.hidden_size,
            None => self.encoder.num_labels(),
        };
        ModelInfo {
            task: self.task,
            device: self.device,
            dtype: DType::F32,
            max_positions: self.max_positions,
            vocab_size: c.vocab_size,
            output_dim,
        }
    }

    fn embed(&self, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        let Some(chain) = &self.chain else {
            return Err(BackendError::unsupported(
                "this model was loaded for rerank, not embed",
            ));
        };
        let hidden = self.encoder.config().hidden_size;
        let inputs = batch::checked(inputs, self.encoder.config(), self.max_positions)?;
        batch::run_batches(&inputs, self.plan(), |b| {
            let states = self.run(|| self.encoder.hidden_states(b))?;
            Ok((0..b.ids.len())
                .map(|r| {
                    let mut v = chain.pooling.pool(states.rows(r), hidden);
                    if chain.normalize {
                        pooling::normalize(&mut v);
                    }
                    v
                })
                .collect())
        })
    }

    fn rerank(&self, pairs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        if self.task != Task::Rerank {
            return Err(BackendError::unsupported(
                "this model was loaded for embed, not rerank",
            ));
        }
        let labels = self.encoder.num_labels();
        let inputs = batch::checked(pairs, self.encoder.config(), self.max_positions)?;
        batch::run_batches(&inputs, self.plan(), |b| {
            let logits = self.run(|| self.encoder.logits(b))?;
            Ok(logits.chunks_exact(labels).map(<[f32]>::to_vec).collect())
        })
    }
}
