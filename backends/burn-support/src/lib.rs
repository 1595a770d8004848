//! # burn-support: what the Burn backends share
//!
//! What the Burn backends (`burn-bert`, `burn-qwen2`) share, so that each of
//! them holds only its architecture:
//!
//! - [`weights`]: strict reading of safetensors checkpoints (one file or a
//!   sharded index, f32/f16/bf16 on disk, converted to f32): every missing,
//!   unexpected, mis-shaped or unreadable tensor is reported in one
//!   invalid-model error naming the tensor and its shapes;
//! - [`device`]: gllm devices to Burn devices (the CPU is `flex`, `gpu:N` the
//!   N-th wgpu adapter, hardware before software rasterizers), and the
//!   containment of the panics Burn's GPU runtimes raise where no adapter or
//!   driver exists, turned into `device_unavailable` / `device_lost` errors;
//! - [`config`]: the helpers of strict `config.json` reading (required
//!   positive values, errors naming the file and the key).
//!
//! Every error is a [`gllm_api::BackendError`] of the kind the runtime's
//! device selection and fallback rely on; nothing here panics on bad input.

pub mod config;
pub mod device;
pub mod weights;
