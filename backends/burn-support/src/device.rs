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

/// The environment variable that lets `gpu` be a software rasterizer too
/// (`GLLM_SOFTWARE_GPU=1`): how the tests reach Mesa's llvmpipe on machines without a GPU.
pub const SOFTWARE_GPU_ENV: &str = "GLLM_SOFTWARE_GPU";

/// Whether software rasterizers count as GPUs ([`SOFTWARE_GPU_ENV`] is `1`).
pub fn software_gpu_allowed() -> bool {
    std::env::var_os(SOFTWARE_GPU_ENV).is_some_and(|v| v == "1")
}

/// The wgpu adapters `gpu:N` numbers: the hardware ones; software rasterizers
/// (llvmpipe, lavapipe, WARP: no card behind them) only when
/// [`software_gpu_allowed`], after the hardware ones. Also returns the names of the
/// software adapters left out, for messages. Enumeration panics where wgpu finds
/// no backend at all: that is contained and reported as `device_unavailable`.
fn wgpu_adapters(device: Device) -> Result<(Vec<BurnDevice>, Vec<String>), BackendError> {
    let mut adapters = contain(
        || {
            BurnDevice::enumerate(DeviceType::Wgpu)
                .into_vec()
                .into_iter()
                .map(|d| {
                    let identity = d.identity();
                    let software = identity.as_ref().is_none_or(|i| i.physical.is_none());
                    let name = identity.map_or_else(|| "unnamed adapter".to_string(), |i| i.name);
                    (software, name, d)
                })
                .collect::<Vec<_>>()
        },
        |m| unavailable(device, m),
    )?;
    adapters.sort_by_key(|(software, _, _)| *software);
    let allowed = software_gpu_allowed();
    let mut skipped = Vec::new();
    let mut usable = Vec::new();
    for (software, name, d) in adapters {
        if software && !allowed {
            skipped.push(name);
        } else {
            usable.push(d);
        }
    }
    Ok((usable, skipped))
}

/// The adapter of `device` among `adapters`, or why there is none.
fn pick(
    device: Device,
    adapters: Vec<BurnDevice>,
    skipped: &[String],
) -> Result<BurnDevice, BackendError> {
    let count = adapters.len();
    adapters.into_iter().nth(device.ordinal).ok_or_else(|| {
        let software = if skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; software rasterizers are not GPUs unless {SOFTWARE_GPU_ENV}=1: {}",
                skipped.join(", ")
            )
        };
        unavailable(
            device,
            format_args!("no such adapter ({count} GPU adapter(s) found{software})"),
        )
    })
}

/// A check that `device` exists: the CPU always does; a GPU when wgpu lists an
/// adapter of that ordinal among those [`burn_device`] numbers. Runs nothing on it.
pub fn probe(device: Device) -> Result<(), BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(()),
        DeviceKind::Gpu => {
            let (adapters, skipped) = wgpu_adapters(device)?;
            pick(device, adapters, &skipped).map(|_| ())
        }
    }
}

/// The Burn device for a gllm device: the CPU is Burn's pure-Rust `flex`
/// backend; `gpu:N` is the N-th hardware wgpu adapter (software rasterizers
/// after them only with [`SOFTWARE_GPU_ENV`]`=1`), checked by running a tiny
/// computation on it. A GPU that is missing or cannot compute is
/// `device_unavailable`.
pub fn burn_device(device: Device) -> Result<BurnDevice, BackendError> {
    match device.kind {
        DeviceKind::Cpu => Ok(BurnDevice::flex()),
        DeviceKind::Gpu => {
            let (adapters, skipped) = wgpu_adapters(device)?;
            let chosen = pick(device, adapters, &skipped)?;
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
