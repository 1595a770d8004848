//! Parity on the GPU through Burn's wgpu backend (in CI: Mesa's llvmpipe, a
//! software Vulkan device): the same greedy tokens as the reference, logits
//! within 1e-3, and the rest of the shared generation suite, for tiny-qwen2 and
//! tiny-qwen3.

use burn_qwen2::{BurnQwen2, FACTORY};
use gllm_api::{BackendFactory, Device, ErrorKind, InferenceBackend};
use gllm_testkit::assert_close;
use gllm_testkit::generate::{self, TINY_QWEN2, TINY_QWEN3};

fn tiny_qwen2_dir() -> std::path::PathBuf {
    TINY_QWEN2.dir()
}

const GPU: Device = Device {
    kind: gllm_api::DeviceKind::Gpu,
    ordinal: 0,
};

#[test]
fn qwen2_conformance_suite_on_wgpu() -> anyhow::Result<()> {
    generate::run_all_for(&FACTORY, GPU, TINY_QWEN2)
}

#[test]
fn qwen3_conformance_suite_on_wgpu() -> anyhow::Result<()> {
    generate::run_all_for(&FACTORY, GPU, TINY_QWEN3)
}

#[test]
fn final_hidden_on_wgpu() -> anyhow::Result<()> {
    for fx in [TINY_QWEN2, TINY_QWEN3] {
        let model = BurnQwen2::load_dir(&fx.dir(), GPU)?;
        assert_eq!(model.info().device, GPU);
        generate::check_final_hidden(fx, &|ids| Ok(model.final_hidden(ids)?))?;
    }
    Ok(())
}

#[test]
fn gpu_and_cpu_logits_agree() -> anyhow::Result<()> {
    let gpu = BurnQwen2::load_dir(&tiny_qwen2_dir(), GPU)?;
    let cpu = BurnQwen2::load_dir(&tiny_qwen2_dir(), Device::CPU)?;
    for (i, c) in TINY_QWEN2.cases()?.iter().enumerate() {
        let (mut gc, mut cc) = (gpu.new_cache()?, cpu.new_cache()?);
        let g = gpu.forward(gc.as_mut(), &c.input_ids)?;
        let want = cpu.forward(cc.as_mut(), &c.input_ids)?;
        assert_close(&format!("case {i}: wgpu vs flex logits"), &g, &want, 1e-3);
    }
    Ok(())
}

#[test]
fn a_missing_gpu_is_unavailable() {
    let e = FACTORY.probe(Device::gpu(99)).expect_err("gpu:99 probed");
    assert_eq!(e.kind, ErrorKind::DeviceUnavailable, "{e}");
    assert!(e.message.contains("gpu:99"), "{e}");
    let Err(e) = BurnQwen2::load_dir(&tiny_qwen2_dir(), Device::gpu(99)) else {
        panic!("gpu:99 loaded");
    };
    assert_eq!(e.kind, ErrorKind::DeviceUnavailable, "{e}");
    assert!(e.message.contains("gpu:99"), "{e}");
}

#[test]
fn the_first_gpu_probes_available() {
    // CI installs llvmpipe, so a gpu:0 exists; probing it opens nothing.
    FACTORY.probe(GPU).expect("gpu:0 probe");
    FACTORY.probe(Device::CPU).expect("cpu probe");
}
