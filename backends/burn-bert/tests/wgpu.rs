//! Parity on the GPU through Burn's wgpu backend (in CI: Mesa's llvmpipe,
//! a software Vulkan device), with the wgpu tolerance of 1e-4.

use burn_bert::{BurnBert, FACTORY};
use gllm_api::{Device, ErrorKind, Task};
use gllm_testkit::embed::{
    self, TINY_BERT, TINY_CROSS_ENCODER, TINY_ROBERTA, TINY_XLM_ROBERTA_RERANKER,
};
use gllm_testkit::fixture;

const GPU: Device = Device {
    kind: gllm_api::DeviceKind::Gpu,
    ordinal: 0,
};

#[test]
fn tiny_bert_embeddings() -> anyhow::Result<()> {
    embed::embed_parity(&FACTORY, GPU, &TINY_BERT, 1e-4)
}

#[test]
fn tiny_bert_last_hidden_state() -> anyhow::Result<()> {
    let model = BurnBert::load_dir(&fixture("tiny-bert"), Task::Embed, GPU)?;
    embed::hidden_states(
        &TINY_BERT,
        |input| Ok(model.last_hidden_state(input)?),
        1e-4,
    )
}

#[test]
fn batch_invariance() -> anyhow::Result<()> {
    embed::batch_invariance(&FACTORY, GPU, &TINY_BERT, 1e-4)
}

#[test]
fn tiny_cross_encoder_logits() -> anyhow::Result<()> {
    embed::cross_encoder_parity(&FACTORY, GPU, &TINY_CROSS_ENCODER, 1e-4)
}

#[test]
fn tiny_roberta_embeddings() -> anyhow::Result<()> {
    embed::embed_parity(&FACTORY, GPU, &TINY_ROBERTA, 1e-4)
}

#[test]
fn tiny_roberta_last_hidden_state() -> anyhow::Result<()> {
    let model = BurnBert::load_dir(&fixture("tiny-roberta"), Task::Embed, GPU)?;
    embed::hidden_states(
        &TINY_ROBERTA,
        |input| Ok(model.last_hidden_state(input)?),
        1e-4,
    )
}

#[test]
fn tiny_roberta_batch_invariance() -> anyhow::Result<()> {
    embed::batch_invariance(&FACTORY, GPU, &TINY_ROBERTA, 1e-4)
}

#[test]
fn tiny_xlm_roberta_reranker_logits() -> anyhow::Result<()> {
    embed::cross_encoder_parity(&FACTORY, GPU, &TINY_XLM_ROBERTA_RERANKER, 1e-4)
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
