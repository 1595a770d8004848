//! The generation conformance suite and the reference hidden states on the CPU (`flex`).

use burn_qwen2::{BurnQwen2, FACTORY};
use gllm_api::Device;
use gllm_testkit::generate::{self, cases, tiny_qwen2_dir};
use gllm_testkit::{assert_close, read_tensor_f32};

fn model() -> anyhow::Result<BurnQwen2> {
    Ok(BurnQwen2::load_dir(&tiny_qwen2_dir(), Device::CPU)?)
}

#[test]
fn final_hidden_matches_reference() -> anyhow::Result<()> {
    let model = model()?;
    let refs = tiny_qwen2_dir().join("reference.safetensors");
    for (i, c) in cases()?.iter().enumerate() {
        let (shape, want) = read_tensor_f32(&refs, &format!("final_hidden.{i}"))?;
        assert_eq!(shape, [c.input_ids.len(), 32]);
        let got = model.final_hidden(&c.input_ids)?;
        assert_close(&format!("final_hidden.{i}"), &got, &want, 1e-4);
    }
    Ok(())
}

#[test]
fn greedy_matches_reference() -> anyhow::Result<()> {
    generate::check_greedy(&model()?)
}

#[test]
fn logits_last_match_reference() -> anyhow::Result<()> {
    generate::check_logits_last(&model()?)
}

#[test]
fn conformance_suite() -> anyhow::Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU)
}
