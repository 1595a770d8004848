//! From gllm's devices to Burn's, and containment of the panics Burn's GPU
//! runtimes raise where no adapter or driver exists (`Device::enumerate`,
//! `Tensor::from_data` and friends panic instead of returning an error).

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

/// Runs the loading step `f` (building a model's tensors on `device`), a
/// panic becoming `device_unavailable` on a GPU (the runtime then tries the
/// next device) and `internal` on the CPU.
pub fn contain_load<T>(
    device: Device,
    f: impl FnOnce() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    contain(f, |m| match device.kind {
        DeviceKind::Gpu => {
            BackendError::device_unavailable(format!("{device}: loading the weights failed: {m}"))
        }
        DeviceKind::Cpu => BackendError::internal(format!("loading the weights: {m}")),
    })?
}

/// Runs the computation `f` of a loaded model on `device`, a panic becoming
/// `device_lost` on a GPU (the runtime then re-runs the request on the next
/// device) and `internal` on the CPU.
pub fn contain_run<T>(
    device: Device,
    f: impl FnOnce() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    contain(f, |m| match device.kind {
        DeviceKind::Gpu => BackendError::device_lost(format!("{device}: {m}")),
        DeviceKind::Cpu => BackendError::internal(m),
    })?
}

/// A `device_unavailable` error about the wgpu adapter of `device`.
fn unavailable(device: Device, message: impl std::fmt::Display) -> BackendError {
    BackendError::device_unavailable(format!("{device} (wgpu): {message}"))
}

/// The wgpu adapters, hardware ones first and software rasterizers (llvmpipe,
/// lavapipe, WARP) last, so that a machine with only a software Vulkan device
/// still has a `gpu:0`. Enumeration panics where wgpu finds no backend at all:
/// that is contained and reported as `device_unavailable` for `device`.
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
        |m| unavailable(device, m),
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
                |m| unavailable(device, m),
            )?;
            if device.ordinal < count {
                Ok(())
            } else {
                Err(unavailable(
                    device,
                    format_args!("no such adapter ({count} wgpu adapter(s) found)"),
                ))
            }
        }
    }
}

/// The Burn device for a gllm device: the CPU is Burn's pure-Rust `flex`
/// backend; `gpu:N` is the N-th wgpu adapter, hardware adapters before
/// software rasterizers (llvmpipe, lavapipe, WARP), checked by running a tiny
/// computation on it. A GPU that is missing or cannot compute is
/// `device_unavailable`.
pub fn burn_device(device: Device) -> Result<BurnDevice, BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(BurnDevice::flex()),
        DeviceKind::Gpu => {
            let adapters = wgpu_adapters(device)?;
            let count = adapters.len();
            let chosen = adapters.into_iter().nth(device.ordinal).ok_or_else(|| {
                unavailable(
                    device,
                    format_args!("no such adapter ({count} wgpu adapter(s) found)"),
                )
            })?;
            smoke_test(&chosen).map_err(|m| unavailable(device, m))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use gllm_api::ErrorKind;

    #[test]
    fn panics_become_errors_with_their_message() {
        let e = contain(|| panic!("boom {}", 7), BackendError::internal).expect_err("panicked");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert_eq!(e.message, "boom 7");
        let e =
            contain(|| std::panic::panic_any(3u8), BackendError::internal).expect_err("panicked");
        assert_eq!(e.message, "unknown panic");
        assert_eq!(contain(|| 5, BackendError::internal).ok(), Some(5));
    }

    #[test]
    fn load_and_run_panics_have_the_kind_fallback_needs() {
        let gpu = Device::gpu(0);
        let e = contain_load::<()>(gpu, || panic!("no memory")).expect_err("panicked");
        assert_eq!(e.kind, ErrorKind::DeviceUnavailable);
        assert!(
            e.message.contains("gpu:0") && e.message.contains("no memory"),
            "{e}"
        );
        let e = contain_load::<()>(Device::CPU, || panic!("bug")).expect_err("panicked");
        assert_eq!(e.kind, ErrorKind::Internal);
        let e = contain_run::<()>(gpu, || panic!("lost")).expect_err("panicked");
        assert_eq!(e.kind, ErrorKind::DeviceLost);
        assert!(e.message.contains("gpu:0"), "{e}");
        let e = contain_run::<()>(Device::CPU, || panic!("bug")).expect_err("panicked");
        assert_eq!(e.kind, ErrorKind::Internal);
        // Errors of `f` pass through unchanged.
        let e =
            contain_run::<()>(gpu, || Err(BackendError::invalid_input("x"))).expect_err("failed");
        assert_eq!(e.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn the_cpu_is_always_there() {
        probe(Device::CPU).expect("cpu probe");
        burn_device(Device::CPU).expect("flex");
    }

    #[test]
    fn a_missing_gpu_is_unavailable() {
        let e = probe(Device::gpu(99)).expect_err("gpu:99 probed");
        assert_eq!(e.kind, ErrorKind::DeviceUnavailable, "{e}");
        assert!(e.message.contains("gpu:99"), "{e}");
        let e = burn_device(Device::gpu(99)).expect_err("gpu:99 opened");
        assert_eq!(e.kind, ErrorKind::DeviceUnavailable, "{e}");
        assert!(e.message.contains("gpu:99"), "{e}");
    }
}
