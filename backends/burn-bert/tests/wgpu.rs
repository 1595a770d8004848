//! Parity on the GPU through Burn's wgpu backend (in CI: Mesa's llvmpipe,
//! a software Vulkan device), with the wgpu tolerance of 1e-4.

use burn_bert::{BurnBert, FACTORY};
use gllm_api::{Device, ErrorKind, Task};
use gllm_testkit::embed::{self, HiddenOf, Tolerances};
use gllm_testkit::fixture;

const GPU: Device = Device {
    kind: gllm_api::DeviceKind::Gpu,
    ordinal: 0,
};

/// The shared suite on every encoder fixture (BERT, RoBERTa, both cross-encoders).
#[test]
fn conformance_suite() -> anyhow::Result<()> {
    let tol = Tolerances {
        outputs: 1e-4,
        hidden: 1e-4,
        batch: 1e-4,
    };
    embed::encoder_suite(&FACTORY, GPU, tol, |dir| {
        let model = BurnBert::load_dir(dir, Task::Embed, GPU)?;
        let of: HiddenOf = Box::new(move |input| Ok(model.last_hidden_state(input)?));
        Ok(of)
    })
}

#[test]
fn all_minilm_l6_v2() -> anyhow::Result<()> {
    embed::minilm_parity(&FACTORY, GPU, 1e-4)
}

#[test]
fn a_missing_gpu_is_unavailable() {
    let Err(e) = BurnBert::load_dir(&fixture("tiny-bert"), Task::Embed, Device::gpu(99)) else {
        panic!("gpu:99 loaded");
    };
    assert_eq!(e.kind, ErrorKind::DeviceUnavailable, "{e}");
    assert!(e.message.contains("gpu:99"), "{e}");
}

#[test]
fn int8_on_a_gpu_is_refused_not_run_in_f32() {
    let mut spec = embed::spec(&fixture("tiny-bert"), Task::Embed);
    spec.options.insert("quantize".into(), "int8".into());
    let Err(e) = BurnBert::load(&spec, GPU) else {
        panic!("int8 loaded on the GPU");
    };
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("runs on the CPU"), "{e}");
}
