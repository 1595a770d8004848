//! A deliberately misbehaving gllm plugin, for the host's tests.
//!
//! The descriptor is spoiled at entry time by `GLLM_FAULTY_PLUGIN=bad-magic |
//! abi-major` (tests load separate copies of the library so that
//! each load reads the variable afresh). The backend `faulty` serves `embed`
//! with fake rows computed from the token ids, misbehaving on the model's
//! `[models.options]`:
//! - `panic = "load" | "embed"`: panics there;
//! - `gpu = "unavailable"`: loading on a GPU fails with a device error;
//! - `dim = "N"`: rows of N values (large outputs, for the memory test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use gllm_api::plugin::{__descriptor, PluginDescriptor};
use gllm_api::{
    BackendError, BackendFactory, Capabilities, DType, Device, DeviceKind, EncodedInput,
    InferenceBackend, ModelInfo, ModelSpec, Task, WeightFormat,
};

struct Faulty;
static FACTORY: Faulty = Faulty;

/// The plugin's own allocator, counting the bytes it has live, so that tests can
/// check that everything the plugin hands to the host comes back to it.
struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes currently allocated by this plugin (for the host's memory test).
#[unsafe(no_mangle)]
pub extern "C" fn gllm_faulty_live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The entry point, with the descriptor spoiled as `GLLM_FAULTY_PLUGIN` says.
#[unsafe(no_mangle)]
pub extern "C" fn gllm_plugin_entry() -> *const PluginDescriptor {
    let good = __descriptor(&FACTORY, env!("CARGO_PKG_VERSION"));
    let mode = std::env::var("GLLM_FAULTY_PLUGIN").unwrap_or_default();
    if mode.is_empty() {
        return good;
    }
    // SAFETY: `good` points to a live descriptor; every field is plain data.
    let mut d: PluginDescriptor = unsafe { std::ptr::read(good) };
    match mode.as_str() {
        "bad-magic" => d.magic = 0xdead_beef,
        "abi-major" => d.abi_major += 1,
        _ => {}
    }
    Box::leak(Box::new(d))
}

impl BackendFactory for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tasks: vec![Task::Embed],
            architectures: vec!["bert".into()],
            formats: vec![WeightFormat::Safetensors],
            devices: vec![DeviceKind::Cpu, DeviceKind::Gpu],
        }
    }

    fn load(
        &self,
        spec: &ModelSpec,
        device: Device,
    ) -> Result<Box<dyn InferenceBackend>, BackendError> {
        let opt = |k: &str| spec.options.get(k).map(String::as_str);
        if opt("panic") == Some("load") {
            panic!("faulty plugin: panic while loading");
        }
        if device.kind == DeviceKind::Gpu && opt("gpu") == Some("unavailable") {
            return Err(BackendError::device_unavailable(
                "faulty plugin: no GPU here",
            ));
        }
        let dim = opt("dim").and_then(|d| d.parse().ok()).unwrap_or(4);
        Ok(Box::new(FaultyModel {
            device,
            dim,
            panic_on_embed: opt("panic") == Some("embed"),
        }))
    }
}

struct FaultyModel {
    device: Device,
    dim: usize,
    panic_on_embed: bool,
}

impl InferenceBackend for FaultyModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            task: Task::Embed,
            device: self.device,
            dtype: DType::F32,
            max_positions: 512,
            vocab_size: 30522,
            output_dim: self.dim,
        }
    }

    fn embed(&self, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, BackendError> {
        if self.panic_on_embed {
            panic!("faulty plugin: panic while embedding");
        }
        Ok(inputs
            .iter()
            .map(|i| {
                let sum: f32 = i.ids.iter().map(|&x| x as f32).sum();
                (0..self.dim).map(|k| sum + k as f32).collect()
            })
            .collect())
    }
}
