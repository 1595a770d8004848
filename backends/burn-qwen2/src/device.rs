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

/// The wgpu adapters, hardware ones first and software rasterizers (llvmpipe,
/// lavapipe, WARP) last, so that a machine with only a software Vulkan device
/// still has a `gpu:0`. Enumeration panics where wgpu finds no backend at all:
/// that is contained and reported as `device_unavailable`.
fn wgpu_adapters(device: Device) -> Result<Vec<BurnDevice>, BackendError> {
    let mut adapters = contain(
        || {
            BurnDevice::enumerate(DeviceType::Wgpu)
                .into_vec()
                .into_iter()
                .map(|d| {
                    let software = d.identity().is_none_or(|i| i.physical.is_none());
                    (software, d)
                })
                .collect::<Vec<_>>()
        },
        |m| BackendError::device_unavailable(format!("{device} (wgpu): {m}")),
    )?;
    adapters.sort_by_key(|(software, _)| *software);
    Ok(adapters.into_iter().map(|(_, d)| d).collect())
}

/// A cheap check that `device` exists: the CPU always does; a GPU when wgpu
/// lists an adapter of that ordinal. Only counts the adapters (opens none and
/// runs nothing on them).
pub fn probe(device: Device) -> Result<(), BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(()),
        DeviceKind::Gpu => {
            let count = contain(
                || BurnDevice::enumerate(DeviceType::Wgpu).into_vec().len(),
                |m| BackendError::device_unavailable(format!("{device} (wgpu): {m}")),
            )?;
            if device.ordinal < count {
                Ok(())
            } else {
                Err(BackendError::device_unavailable(format!(
                    "{device} (wgpu): no such adapter ({count} wgpu adapter(s) found)"
                )))
            }
        }
    }
}

/// The Burn device for a gllm device: the CPU is Burn's pure-Rust `flex`
/// backend; `gpu:N` is the N-th wgpu adapter (see [`probe`] for the order),
/// checked by running a tiny computation on it.
pub fn burn_device(device: Device) -> Result<BurnDevice, BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(BurnDevice::flex()),
        DeviceKind::Gpu => {
            let unavailable =
                |m: String| BackendError::device_unavailable(format!("{device} (wgpu): {m}"));
            let adapters = wgpu_adapters(device)?;
            let count = adapters.len();
            let chosen = adapters.into_iter().nth(device.ordinal).ok_or_else(|| {
                unavailable(format!("no such adapter ({count} wgpu adapter(s) found)"))
            })?;
            smoke_test(&chosen).map_err(unavailable)?;
            Ok(chosen)
        }
    }
}

/// Runs a tiny computation on `device` and reads it back: a device that cannot
/// do that is unavailable.
fn smoke_test(device: &BurnDevice) -> Result<(), String> {
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
        Ok(v) => Err(format!("smoke test computed {v:?} instead of [2.0, 4.0]")),
        Err(e) => Err(format!("smoke test read-back failed: {e:?}")),
    }
}
