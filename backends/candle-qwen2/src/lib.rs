//! # candle-qwen2: Qwen2 / Qwen3 / Llama text generation on Candle
//!
//! Serves the `generate` task for the decoders of [`gllm_arch`] (Qwen2, Qwen3, Llama)
//! from Hugging Face safetensors directories and from `qwen2`/`qwen3`/`llama` GGUF files (quantized or not), with KV caches
//! owned by the caller ([`Qwen2Cache`]). The decoder is our own code on candle-core /
//! candle-nn (see [`model`]); activations are f32, weights stay in their stored form
//! (bf16/f16 widened in-register, GGUF blocks of every common type repacked at load, both
//! by the gllm-kernels crate, re-exported as [`kernels`]), so an f32 request on bf16
//! weights computes exactly what transformers does in float32 on the same weights.
//!
//! Entry points besides the registered factory: [`load`] (the concrete backend, with
//! [`Qwen2Backend::hidden_states`]) and [`synth::synthesize`] (random-weight models
//! for benchmarks).
//!
//! Manifest options: `dequantize = "true"` widens GGUF block-quantized weights to f32
//! at load (exact float32 arithmetic on the dequantized weights, slower);
//! `candle_qmatmul = "true"` multiplies GGUF block-quantized weights with candle's own
//! quantized kernels instead of gllm-kernels' repacked ones, for comparison;
//! `cpu_tensor_ops = "true"` runs the layers on the CPU with candle's tensor ops, the
//! path other devices take, rather than over plain rows (see [`model`]), so that the
//! CPU can test that path; `kv_cache = "f16"` keeps the CPU KV cache in f16 (half the
//! memory, and half the bytes each decode step reads from it, as llama.cpp does), where
//! the default `f32` is exact.

pub mod attention;
pub mod cache;
pub mod embedding;
pub mod error;
pub mod gguf;
pub mod gguf_scan;
pub mod hf;
mod host;
pub mod linear;
pub mod loader;
pub mod model;
pub mod synth;

/// The CPU weight kernels (bf16/f16 and every GGUF block type), from gllm-kernels.
pub use gllm_kernels as kernels;

use std::sync::atomic::{AtomicU64, Ordering};

use gllm_api::{
    BackendError, BackendFactory, Capabilities, DType, Device, DeviceKind, EncodedInput,
    InferenceBackend, KvCache, LoadProgress, ModelInfo, ModelSpec, Task, WeightFormat,
    downcast_cache,
};

pub use cache::Qwen2Cache;
pub use gllm_arch::{Architecture, DecoderConfig, RopeStyle};
pub use model::{Qwen2Model, Segment};

/// The backend's name in manifests.
pub const NAME: &str = "candle-qwen2";

/// The factory registered with the runtime.
#[derive(Debug, Default)]
pub struct Qwen2Factory;

/// The registered factory instance.
pub static FACTORY: Qwen2Factory = Qwen2Factory;

gllm_api::inventory::submit! { gllm_api::Registration::new(&FACTORY) }

impl BackendFactory for Qwen2Factory {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut devices = vec![DeviceKind::Cpu];
        if cfg!(feature = "cuda") {
            devices.push(DeviceKind::Gpu);
        }
        Capabilities {
            tasks: vec![Task::Generate, Task::Embed],
            architectures: gllm_arch::Architecture::ALL
                .iter()
                .map(|a| a.name().to_string())
                .collect(),
            formats: vec![WeightFormat::Safetensors, WeightFormat::Gguf],
            devices,
        }
    }

    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        Ok(Box::new(load(spec, device)?))
    }

    fn load_with_progress(
        &self,
        spec: &ModelSpec,
        device: Device,
        progress: LoadProgress,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        Ok(Box::new(load_with_progress(spec, device, progress)?))
    }
}

fn candle_device(device: Device) -> Result<candle_core::Device, BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(candle_core::Device::Cpu),
        DeviceKind::Gpu => {
            #[cfg(feature = "cuda")]
            {
                candle_core::Device::new_cuda(device.ordinal).map_err(|e| {
                    BackendError::device_unavailable(format!("CUDA device {device}: {e}"))
                })
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(BackendError::device_unavailable(format!(
                    "{NAME} was built without GPU support (feature `cuda`); cannot use {device}"
                )))
            }
        }
    }
}

fn option_flag(spec: &ModelSpec, key: &str) -> Result<bool, BackendError> {
    match spec.options.get(key).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => Err(BackendError::invalid_input(format!(
            "option `{key}` must be true or false, not `{v}`"
        ))),
    }
}

/// Loads the model of `spec` on `device` as the concrete backend type.
pub fn load(spec: &ModelSpec, device: Device) -> Result<Qwen2Backend, BackendError> {
    load_with_progress(spec, device, LoadProgress::none())
}

/// [`load`], reporting the bytes of weights read to `progress`.
pub fn load_with_progress(
    spec: &ModelSpec,
    device: Device,
    progress: LoadProgress,
) -> Result<Qwen2Backend, BackendError> {
    let pooling = match spec.task {
        Task::Generate => None,
        Task::Embed => Some(embedding::Pooling::load(spec)?),
        other => {
            return Err(BackendError::unsupported(format!(
                "{NAME} serves `generate` and `embed`, not `{other}`"
            )));
        }
    };
    spec.refuse_option(
        NAME,
        "quantize",
        "quantized decoders come as GGUF files (Q4_K_M, Q8_0, …); load one of those",
    )?;
    let dev = candle_device(device)?;
    let dequantize = option_flag(spec, "dequantize")?;
    let candle_qmatmul = option_flag(spec, "candle_qmatmul")?;
    let mut model = match spec.format {
        WeightFormat::Safetensors => hf::load_dir(&spec.path, spec.dtype, dev, &progress)?,
        WeightFormat::Gguf => {
            gguf::load_gguf(&spec.path, dev, dequantize, candle_qmatmul, &progress)?
        }
    };
    model.tensor_ops = option_flag(spec, "cpu_tensor_ops")?;
    model.kv_f16 = match spec
        .options
        .get("kv_cache")
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v == "f32" => false,
        Some(v) if v == "f16" && device.kind == DeviceKind::Cpu && !model.tensor_ops => true,
        Some(v) if v == "f16" => {
            return Err(BackendError::unsupported(format!(
                "option `kv_cache` = `f16` is for the CPU; on {device} {NAME} keeps an f32 cache"
            )));
        }
        Some(v) => {
            return Err(BackendError::invalid_input(format!(
                "option `kv_cache` must be `f32` or `f16`, not `{v}`"
            )));
        }
    };
    let dtype = match spec.format {
        WeightFormat::Safetensors => spec.dtype.unwrap_or(DType::F32),
        WeightFormat::Gguf => DType::F32,
    };
    let mut backend = Qwen2Backend::new(model, device, dtype);
    backend.pooling = pooling;
    Ok(backend)
}

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A loaded decoder serving `generate`, or `embed` when it has a pooling.
#[derive(Debug)]
pub struct Qwen2Backend {
    model: Qwen2Model,
    id: u64,
    device: Device,
    dtype: DType,
    pooling: Option<embedding::Pooling>,
}

impl Qwen2Backend {
    /// Wraps a loaded model. `dtype` is what [`ModelInfo::dtype`] reports: the weights'
    /// precision as requested (activations and accumulation are always f32).
    pub fn new(model: Qwen2Model, device: Device, dtype: DType) -> Self {
        Self {
            model,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            device,
            dtype,
            pooling: None,
        }
    }

    /// The decoder.
    pub fn model(&self) -> &Qwen2Model {
        &self.model
    }

    /// The decoder's hyper-parameters.
    pub fn config(&self) -> &DecoderConfig {
        &self.model.cfg
    }

    /// A new empty cache of the concrete type.
    pub fn new_qwen2_cache(&self) -> Qwen2Cache {
        Qwen2Cache::new(self.id, self.model.layers.len())
    }

    fn own_cache<'a>(
        &self,
        cache: &'a mut dyn KvCache,
    ) -> Result<&'a mut Qwen2Cache, BackendError> {
        let c = downcast_cache::<Qwen2Cache>(cache)?;
        if c.model_id != self.id {
            return Err(BackendError::invalid_input(
                "KV cache was created by another loaded model",
            ));
        }
        Ok(c)
    }

    /// Appends `tokens` to the sequence of `cache` (like [`InferenceBackend::forward`])
    /// and returns the final hidden states, after the final RMSNorm, of every appended
    /// position: `tokens.len()` rows of `hidden_size` values.
    pub fn hidden_states(
        &self,
        cache: &mut dyn KvCache,
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let c = self.own_cache(cache)?;
        let h = rayon::scope(|_| self.model.forward_hidden(c, tokens))?;
        h.to_vec2::<f32>()
            .map_err(|e| BackendError::internal(e.to_string()))
    }
}

impl InferenceBackend for Qwen2Backend {
    fn info(&self) -> ModelInfo {
        let (task, output_dim) = match self.pooling {
            Some(_) => (Task::Embed, self.model.cfg.hidden_size),
            None => (Task::Generate, self.model.output().dims().0),
        };
        ModelInfo {
            task,
            device: self.device,
            dtype: self.dtype,
            max_positions: self.model.cfg.max_position_embeddings,
            vocab_size: self.model.cfg.vocab_size,
            output_dim,
        }
    }

    /// Each input alone through the decoder on a fresh cache; its last token's final
    /// hidden state, pooled.
    fn embed(&self, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        let pooling = self.pooling.ok_or_else(|| {
            BackendError::unsupported(format!("{NAME}: this model was loaded to generate"))
        })?;
        inputs
            .iter()
            .map(|input| {
                let mut cache = self.new_qwen2_cache();
                pooling.pool(&self.hidden_states(&mut cache, &input.ids)?)
            })
            .collect()
    }

    fn new_cache(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Ok(Box::new(self.new_qwen2_cache()))
    }

    /// Keys and values in f32, per layer and KV head.
    fn kv_bytes_per_token(&self) -> Option<usize> {
        let c = &self.model.cfg;
        Some(c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2 * 4)
    }

    fn forward(&self, cache: &mut dyn KvCache, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let c = self.own_cache(cache)?;
        // The whole step runs on a worker of the thread pool, so each of its ~100
        // parallel kernels is a fork-join among hot workers, not a hand-off from this
        // (outside) thread that sleeps and is woken each time: +10% decode at 0.5B.
        Ok(rayon::scope(|_| self.model.forward(c, tokens))?)
    }

    /// One pass for every sequence: the weights are read once for all of them (decode
    /// is bound by reading weights, so N sequences step in about the time of one).
    fn forward_batch(
        &self,
        steps: &mut [(&mut dyn KvCache, &[u32])],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut segments = Vec::with_capacity(steps.len());
        for (cache, tokens) in steps.iter_mut() {
            let cache = self.own_cache(&mut **cache)?;
            segments.push(Segment { cache, tokens });
        }
        Ok(rayon::scope(|_| self.model.forward_batch(&mut segments))?)
    }

    fn batches_steps(&self) -> bool {
        true
    }
}
