//! Backend factories and their link-time registry.

use crate::{
    BackendError, Device, DeviceKind, InferenceBackend, LoadProgress, ModelSpec, Task, WeightFormat,
};

/// What a backend can load: a model is a candidate for a backend only when its
/// task, architecture, weight format and device are all listed here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Tasks served.
    pub tasks: Vec<Task>,
    /// Architectures understood (`bert`, `qwen2`, `llama`, …).
    pub architectures: Vec<String>,
    /// Weight formats read.
    pub formats: Vec<WeightFormat>,
    /// Device kinds the backend was built for (whether one exists is found at load).
    pub devices: Vec<DeviceKind>,
}

impl Capabilities {
    /// Why this backend cannot take `spec` on `device`, or `None` when it can try.
    pub fn mismatch(&self, spec: &ModelSpec, device: Device) -> Option<String> {
        if !self.tasks.contains(&spec.task) {
            return Some(format!("does not serve task `{}`", spec.task));
        }
        if !self.formats.contains(&spec.format) {
            return Some(format!("does not read {} weights", spec.format.as_str()));
        }
        if !self
            .architectures
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&spec.architecture))
        {
            return Some(format!(
                "does not support architecture `{}`",
                spec.architecture
            ));
        }
        if !self.devices.contains(&device.kind) {
            return Some(format!("was not built for device {device}"));
        }
        None
    }
}

/// Creates [`InferenceBackend`]s. One static instance per backend, registered
/// with [`inventory`] through a [`Registration`].
pub trait BackendFactory: Send + Sync {
    /// The name the manifest's `backends` list uses (`burn-bert`, `candle-qwen2`, …).
    fn name(&self) -> &str;

    /// What the backend can load.
    fn capabilities(&self) -> Capabilities;

    /// A cheap check, without loading a model, that `device` can be used by this
    /// backend (used to plan and list). The default assumes it can; `load` has
    /// the last word.
    fn probe(&self, device: Device) -> Result<(), BackendError> {
        let _ = device;
        Ok(())
    }

    /// Loads the model on `device`. A missing device is
    /// [`crate::ErrorKind::DeviceUnavailable`]; bad weights are
    /// [`crate::ErrorKind::InvalidModel`] naming the tensor or key.
    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError>;

    /// [`BackendFactory::load`], reporting the bytes of weights read to `progress`
    /// (for a progress bar). The default reports nothing and calls `load`; backends
    /// whose loads take long override it (and make `load` call it with
    /// [`LoadProgress::none`]).
    fn load_with_progress(
        &self,
        spec: &ModelSpec,
        device: Device,
        progress: LoadProgress,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        let _ = progress;
        self.load(spec, device)
    }
}

/// The link-time registration of a built-in backend:
/// `gllm_api::inventory::submit! { gllm_api::Registration::new(&FACTORY) }`.
pub struct Registration {
    /// The factory.
    pub factory: &'static dyn BackendFactory,
}

impl Registration {
    /// Wraps a static factory.
    pub const fn new(factory: &'static dyn BackendFactory) -> Self {
        Self { factory }
    }
}

inventory::collect!(Registration);

/// Every factory registered by a crate linked into this program.
pub fn registered_factories() -> impl Iterator<Item = &'static dyn BackendFactory> {
    inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.factory)
}
