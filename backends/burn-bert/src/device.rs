//! From gllm's devices to Burn's, and containment of the panics Burn's GPU
//! runtimes raise where no adapter or driver exists.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{Device as BurnDevice, DeviceType, Tensor, TensorData};
use gllm_api::{BackendError, Device, DeviceKind};

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`, turning a panic into an error built by `err` from its message.
pub fn contain<T>(
    f: impl FnOnce() -> T,
    err: impl FnOnce(String) -> BackendError,
) -> Result<T, BackendError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| err(panic_message(p)))
}

/// The Burn device for a gllm device: the CPU is Burn's pure-Rust `flex`
/// backend; `gpu:N` is the N-th wgpu adapter, hardware adapters before
/// software rasterizers (llvmpipe, lavapipe, WARP), which come last so that a
/// machine with only a software Vulkan device still has a `gpu:0`.
pub fn burn_device(device: Device) -> Result<BurnDevice, BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(BurnDevice::flex()),
        DeviceKind::Gpu => {
            let unavailable =
                |m: String| BackendError::device_unavailable(format!("{device} (wgpu): {m}"));
            let mut adapters = contain(
                || {
                    let devices = BurnDevice::enumerate(DeviceType::Wgpu).into_vec();
                    devices
                        .into_iter()
                        .map(|d| {
                            let software = d.identity().is_none_or(|i| i.physical.is_none());
                            (software, d)
                        })
                        .collect::<Vec<_>>()
                },
                unavailable,
            )?;
            adapters.sort_by_key(|(software, _)| *software);
            let count = adapters.len();
            let chosen = adapters
                .into_iter()
                .nth(device.ordinal)
                .map(|(_, d)| d)
                .ok_or_else(|| {
                    unavailable(format!("no such adapter ({count} wgpu adapter(s) found)"))
                })?;
            probe(&chosen).map_err(unavailable)?;
            Ok(chosen)
        }
    }
}

/// Runs a tiny computation on `device` and reads it back: a device that cannot
/// do that is unavailable.
fn probe(device: &BurnDevice) -> Result<(), String> {
    let result = contain(
        || {
            let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), device);
            (t.clone() + t)
                .try_into_data()
                .map_err(|e| format!("{e:?}"))
        },
        BackendError::internal,
    )
    .map_err(|e| e.message)??;
    match result.try_to_vec::<f32>() {
        Ok(v) if v == [2.0, 4.0] => Ok(()),
        Ok(v) => Err(format!("probe computed {v:?} instead of [2.0, 4.0]")),
        Err(e) => Err(format!("probe read-back failed: {e:?}")),
    }
}
