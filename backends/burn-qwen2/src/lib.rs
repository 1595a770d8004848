//! # burn-qwen2: Qwen2 and Qwen3 text generation on Burn
//!
//! A gllm backend (`burn-qwen2`) for Qwen2 and Qwen3 decoders ([`gllm_arch`]) stored as Hugging Face
//! safetensors directories (f32, f16 or bf16 on disk), serving `generate`
//! through caller-owned KV caches. It runs on the CPU through Burn's
//! pure-Rust `flex` backend and on GPUs through `wgpu` (Vulkan, Metal, DX12),
//! with no native toolchain.
//!
//! Everything the decoder computes is written with Burn tensor operations:
//! RoPE with the config's `rope_theta` (half-rotation layout), grouped-query
//! attention that never repeats the K/V heads, causal masking for prefill at
//! any cache offset, RMSNorm, the SwiGLU MLP, q/k/v biases (Qwen2) or RMSNorm
//! per q/k head (Qwen3), and a tied or separate output projection.

pub mod attention;
pub mod cache;
pub mod model;
pub mod rope;

/// gllm devices to Burn devices and panic containment, shared with the other Burn backends.
pub use burn_support::device;
/// Strict safetensors reading, shared with the other Burn backends.
pub use burn_support::weights;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::DType as BurnDType;
use gllm_api::{
    BackendError, BackendFactory, Capabilities, DType, Device, DeviceKind, InferenceBackend,
    KvCache, LoadProgress, ModelInfo, ModelSpec, Task, WeightFormat,
};

pub use crate::cache::Qwen2Cache;
use crate::model::{Output, Qwen2Model};
use crate::weights::WeightStore;
use gllm_arch::{Architecture, DecoderConfig};

/// The factory of the `burn-qwen2` backend.
pub struct BurnQwen2Factory;

/// The registered factory instance.
pub static FACTORY: BurnQwen2Factory = BurnQwen2Factory;

gllm_api::inventory::submit! { gllm_api::Registration::new(&FACTORY) }

impl BackendFactory for BurnQwen2Factory {
    fn name(&self) -> &str {
        "burn-qwen2"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tasks: vec![Task::Generate],
            architectures: ARCHITECTURES.iter().map(|a| a.name().to_string()).collect(),
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
        Ok(Box::new(BurnQwen2::load(spec, device)?))
    }

    fn load_with_progress(
        &self,
        spec: &ModelSpec,
        device: Device,
        progress: LoadProgress,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        Ok(Box::new(BurnQwen2::load_with_progress(
            spec, device, progress,
        )?))
    }
}

/// Gives every loaded model its own id, so a cache of one model is refused by another.
/// The architectures this backend builds.
const ARCHITECTURES: [Architecture; 2] = [Architecture::Qwen2, Architecture::Qwen3];

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A loaded Qwen2 decoder.
pub struct BurnQwen2 {
    model: Qwen2Model,
    id: u64,
    device: Device,
    dtype: DType,
}

impl BurnQwen2 {
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
        if spec.task != Task::Generate {
            return Err(BackendError::unsupported(format!(
                "burn-qwen2 does not serve task `{}`",
                spec.task
            )));
        }
        spec.refuse_option(
            "burn-qwen2",
            "quantize",
            "burn-qwen2 computes in f32/f16/bf16; quantized decoders run on candle-qwen2 from GGUF files",
        )?;
        if spec.format != WeightFormat::Safetensors {
            return Err(BackendError::unsupported(format!(
                "burn-qwen2 does not read {} weights",
                spec.format.as_str()
            )));
        }
        if !ARCHITECTURES
            .iter()
            .any(|a| spec.architecture.eq_ignore_ascii_case(a.name()))
        {
            return Err(BackendError::unsupported(format!(
                "burn-qwen2 does not support architecture `{}`",
                spec.architecture
            )));
        }
        // bf16 is computed in f32: Burn's CPU backend has no bf16 matrix product
        // (it widens both operands to f32 on every call, 0.7 tok/s on the Qwen2-0.5B
        // shape against 5 in f32) and wgpu has no bf16 arithmetic. Widening bf16
        // weights to f32 is exact, so this computes the model the checkpoint holds,
        // and `info().dtype` says f32. f16 is computed in f16 (matrix products
        // accumulate in f32 on the CPU; RMSNorm runs in f32).
        let dtype = match spec.dtype {
            None | Some(DType::F32) | Some(DType::Bf16) => DType::F32,
            Some(DType::F16) => DType::F16,
        };
        let burn_dtype = match dtype {
            DType::F16 => BurnDType::F16,
            _ => BurnDType::F32,
        };
        let dir = spec.path.as_path();
        let config = DecoderConfig::from_hf_file(&dir.join("config.json"))?;
        if !ARCHITECTURES.contains(&config.architecture) {
            return Err(BackendError::unsupported(format!(
                "{}: burn-qwen2 does not build `{}` decoders",
                dir.display(),
                config.architecture
            )));
        }
        let mut store = WeightStore::open(dir)?;
        store.report_to(progress);
        let burn_device = device::burn_device(device)?;
        // Matrix-vector products are split over the CPU's threads; a GPU runs each as one.
        let splits = match device.kind {
            DeviceKind::Cpu => rayon::current_num_threads(),
            DeviceKind::Gpu => 1,
        };
        let model = device::contain_load(device, || {
            Qwen2Model::load(&config, store, &burn_device, burn_dtype, splits, dir)
        })?;
        Ok(Self {
            model,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            device,
            dtype,
        })
    }

    /// Loads the model in `dir` (its `config.json` says which architecture) on
    /// `device`, computing in f32.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self, BackendError> {
        let architecture = DecoderConfig::from_hf_file(&dir.join("config.json"))?.architecture;
        let spec = ModelSpec {
            id: dir.display().to_string(),
            task: Task::Generate,
            path: dir.to_path_buf(),
            format: WeightFormat::Safetensors,
            architecture: architecture.name().to_string(),
            dtype: None,
            options: Default::default(),
        };
        Self::load(&spec, device)
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &DecoderConfig {
        self.model.config()
    }

    /// The final hidden states (after the final RMSNorm) of every position of
    /// `tokens` run as one fresh sequence, row-major `[tokens, hidden]`.
    pub fn final_hidden(&self, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let mut cache = self.cache();
        self.run(&mut cache, tokens, Output::Hidden)
    }

    fn cache(&self) -> Qwen2Cache {
        Qwen2Cache::new(
            self.id,
            self.model.config().num_hidden_layers,
            self.model.config().max_position_embeddings,
        )
    }

    /// Refuses a cache of another model, empty input, unknown ids and context overflow.
    fn check(&self, cache: &mut Qwen2Cache, tokens: &[u32]) -> Result<(), BackendError> {
        let c = self.model.config();
        if cache.model_id != self.id {
            return Err(BackendError::invalid_input(
                "KV cache was created by another loaded model",
            ));
        }
        if tokens.is_empty() {
            return Err(BackendError::invalid_input("no tokens to forward"));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(BackendError::invalid_input(format!(
                "token id {bad} is out of range (vocabulary of {})",
                c.vocab_size
            )));
        }
        if cache.len + tokens.len() > c.max_position_embeddings {
            return Err(BackendError::invalid_input(format!(
                "context overflow: {} cached + {} new positions exceed the model's {}",
                cache.len,
                tokens.len(),
                c.max_position_embeddings
            )));
        }
        if !cache.is_whole() {
            cache.reset();
        }
        Ok(())
    }

    /// Runs `f`, turning a panic of Burn into an error of the right kind.
    fn contained<T>(&self, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
        device::contain_run(self.device, f)
    }

    /// Checks the input, then runs one forward pass (a cache a failed pass
    /// left broken is emptied).
    fn run(
        &self,
        cache: &mut Qwen2Cache,
        tokens: &[u32],
        output: Output,
    ) -> Result<Vec<f32>, BackendError> {
        self.check(cache, tokens)?;
        let result = self.contained(|| self.model.forward(cache, tokens, output));
        if result.is_err() && !cache.is_whole() {
            cache.reset();
        }
        result
    }
}

impl InferenceBackend for BurnQwen2 {
    fn info(&self) -> ModelInfo {
        let c = self.model.config();
        ModelInfo {
            task: Task::Generate,
            device: self.device,
            dtype: self.dtype,
            max_positions: c.max_position_embeddings,
            vocab_size: c.vocab_size,
            output_dim: c.vocab_size,
        }
    }

    fn new_cache(&self) -> Result<Box<dyn KvCache>, BackendError> {
        Ok(Box::new(self.cache()))
    }

    /// Keys and values in the compute dtype, per layer and KV head.
    fn kv_bytes_per_token(&self) -> Option<usize> {
        let c = self.model.config();
        let size = match self.dtype {
            gllm_api::DType::F16 | gllm_api::DType::Bf16 => 2,
            gllm_api::DType::F32 => 4,
        };
        Some(c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2 * size)
    }

    fn forward(&self, cache: &mut dyn KvCache, tokens: &[u32]) -> Result<Vec<f32>, BackendError> {
        let cache = gllm_api::downcast_cache::<Qwen2Cache>(cache)?;
        self.run(cache, tokens, Output::LastLogits)
    }

    fn forward_batch(
        &self,
        steps: &mut [(&mut dyn KvCache, &[u32])],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut segments = Vec::with_capacity(steps.len());
        for (cache, tokens) in steps.iter_mut() {
            let cache = gllm_api::downcast_cache::<Qwen2Cache>(&mut **cache)?;
            self.check(cache, tokens)?;
            segments.push((cache, *tokens));
        }
        if segments.len() <= 1 {
            return segments
                .into_iter()
                .map(|(cache, tokens)| self.run(cache, tokens, Output::LastLogits))
                .collect();
        }
        let result = self.contained(|| self.model.forward_many(&mut segments));
        if result.is_err() {
            for (cache, _) in &mut segments {
                if !cache.is_whole() {
                    cache.reset();
                }
            }
        }
        result
    }

    fn batches_steps(&self) -> bool {
        true
    }
}
