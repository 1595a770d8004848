//! Parity with the sentence-transformers references on the CPU (Burn `flex`).

use burn_bert::{BurnBert, FACTORY};
use gllm_api::{Device, Task};
use gllm_testkit::{embed, fixture};

#[test]
fn registered_under_its_name() {
    let names: Vec<&str> = gllm_api::registered_factories().map(|f| f.name()).collect();
    assert!(names.contains(&"burn-bert"), "registered: {names:?}");
}

#[test]
fn tiny_bert_embeddings() -> anyhow::Result<()> {
    embed::tiny_bert_parity(&FACTORY, Device::CPU, 1e-5)
}

#[test]
fn tiny_bert_last_hidden_state() -> anyhow::Result<()> {
    let model = BurnBert::load_dir(&fixture("tiny-bert"), Task::Embed, Device::CPU)?;
    embed::tiny_bert_hidden_states(|input| Ok(model.last_hidden_state(input)?), 1e-4)
}

#[test]
fn batch_invariance() -> anyhow::Result<()> {
    embed::batch_invariance(&FACTORY, Device::CPU, 1e-6)
}

#[test]
fn tiny_cross_encoder_logits() -> anyhow::Result<()> {
    embed::tiny_cross_encoder_parity(&FACTORY, Device::CPU, 1e-5)
}

#[test]
fn all_minilm_l6_v2() -> anyhow::Result<()> {
    embed::minilm_parity(&FACTORY, Device::CPU, 1e-5)
}
