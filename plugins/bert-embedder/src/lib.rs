//! An example gllm backend plugin, and the template to copy for your own.
//!
//! A plugin is an ordinary Rust backend (a [`BackendFactory`] that loads
//! [`gllm_api::InferenceBackend`]s) built as a `cdylib` and exported with
//! [`gllm_api::export_plugin!`]. The macro generates the C entry point and a
//! vtable whose every function runs under `catch_unwind`, so a panic in the
//! plugin becomes an error in the host, never a crash.
//!
//! This one serves BERT embeddings and cross-encoder reranking by reusing the
//! model code of the built-in `burn-bert` backend, under its own name
//! (`plugin-bert`), on the CPU. Build it with
//! `cargo build --release -p gllm-plugin-bert` and name
//! `target/release/libgllm_plugin_bert.so` in a manifest:
//!
//! ```toml
//! [plugins]
//! libraries = ["target/release/libgllm_plugin_bert.so"]
//!
//! [[models]]
//! id = "tiny-bert"
//! task = "embed"
//! path = "../shared/fixtures/tiny-bert"
//! backends = ["plugin-bert"]
//! ```

use gllm_api::{
    BackendError, BackendFactory, Capabilities, Device, DeviceKind, InferenceBackend, ModelSpec,
};

/// The plugin's factory: burn-bert's model code on the CPU, named `plugin-bert`.
pub struct PluginBertFactory;

/// The exported factory.
pub static FACTORY: PluginBertFactory = PluginBertFactory;

gllm_api::export_plugin!(FACTORY);

impl BackendFactory for PluginBertFactory {
    fn name(&self) -> &str {
        "plugin-bert"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            devices: vec![DeviceKind::Cpu],
            ..burn_bert::FACTORY.capabilities()
        }
    }

    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        if device.kind != DeviceKind::Cpu {
            return Err(BackendError::device_unavailable(
                "the plugin-bert example runs on the CPU only",
            ));
        }
        burn_bert::FACTORY.load(spec, device)
    }
}
