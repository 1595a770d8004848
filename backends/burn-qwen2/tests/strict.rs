//! Strict loading: the shared schema-driven suite on tiny-qwen2 and tiny-qwen3, and
//! broken copies of tiny-qwen2 built here (unreadable dtypes, configs, files), each
//! an invalid-model error naming what is wrong; and the layouts real checkpoints use
//! (sharded, f32 on disk, a separate `lm_head`) load and give the reference tokens.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn_qwen2::BurnQwen2;
use gllm_api::{BackendError, Device};
use gllm_testkit::decoder_schema::check_decoder_schema;
use gllm_testkit::generate::{self, TINY_QWEN2, TINY_QWEN3};
use gllm_testkit::strict::{
    Dtype, StoredTensor, assert_invalid_model as assert_invalid, load_error, read_tensors,
    scratch_copy, set_json_key, write_sharded, write_tensors,
};

fn tiny_qwen2_dir() -> PathBuf {
    TINY_QWEN2.dir()
}

/// A fresh directory holding tiny-qwen2's config.json (no weights).
fn scratch(name: &str) -> Result<PathBuf> {
    scratch_copy(
        &format!("burn-qwen2-{name}"),
        &tiny_qwen2_dir(),
        &["config.json"],
    )
}

/// tiny-qwen2's tensors, sorted by name.
fn tensors() -> Result<Vec<StoredTensor>> {
    read_tensors(&tiny_qwen2_dir().join("model.safetensors"))
}

fn load_err(dir: &Path) -> Result<BackendError> {
    load_error(BurnQwen2::load_dir(dir, Device::CPU), dir)
}

fn set_config(dir: &Path, key: &str, value: serde_json::Value) -> Result<()> {
    set_json_key(&dir.join("config.json"), key, value)
}

#[test]
fn qwen2_schema_suite() -> Result<()> {
    check_decoder_schema(TINY_QWEN2, "burn-qwen2", &|dir| {
        BurnQwen2::load_dir(dir, Device::CPU).map(drop)
    })
}

#[test]
fn qwen3_schema_suite() -> Result<()> {
    check_decoder_schema(TINY_QWEN3, "burn-qwen2", &|dir| {
        BurnQwen2::load_dir(dir, Device::CPU).map(drop)
    })
}

#[test]
fn an_unreadable_dtype_is_named() -> Result<()> {
    let dir = scratch("dtype")?;
    let mut t = tensors()?;
    for x in &mut t {
        if x.name == "model.layers.0.input_layernorm.weight" {
            x.dtype = Dtype::I16;
        }
    }
    write_tensors(&dir.join("model.safetensors"), &t)?;
    assert_invalid(
        &load_err(&dir)?,
        &["tensor `model.layers.0.input_layernorm.weight`", "I16"],
    );
    Ok(())
}

#[test]
fn an_untied_model_needs_its_lm_head() -> Result<()> {
    let dir = scratch("untied-missing")?;
    set_config(&dir, "tie_word_embeddings", false.into())?;
    write_tensors(&dir.join("model.safetensors"), &tensors()?)?;
    assert_invalid(
        &load_err(&dir)?,
        &["missing tensor `lm_head.weight` (shape [151936, 32])"],
    );
    Ok(())
}

#[test]
fn a_separate_lm_head_is_used() -> Result<()> {
    // An untied copy of the tied model: the same function, through the separate head.
    let dir = scratch("untied")?;
    set_config(&dir, "tie_word_embeddings", false.into())?;
    let mut t = tensors()?;
    let embed = t
        .iter()
        .find(|x| x.name == "model.embed_tokens.weight")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no embedding"))?;
    t.push(StoredTensor {
        name: "lm_head.weight".into(),
        ..embed
    });
    write_tensors(&dir.join("model.safetensors"), &t)?;
    let model = BurnQwen2::load_dir(&dir, Device::CPU)?;
    generate::check_logits_last(&model, TINY_QWEN2)?;
    generate::check_greedy(&model, TINY_QWEN2)
}

#[test]
fn bad_config_values_are_invalid() -> Result<()> {
    let dir = scratch("config")?;
    write_tensors(&dir.join("model.safetensors"), &tensors()?)?;
    set_config(&dir, "num_key_value_heads", 3.into())?;
    assert_invalid(&load_err(&dir)?, &["num_key_value_heads 3"]);
    set_config(&dir, "num_key_value_heads", 2.into())?;
    set_config(&dir, "hidden_size", serde_json::Value::Null)?;
    assert_invalid(&load_err(&dir)?, &["missing `hidden_size`"]);
    std::fs::write(dir.join("config.json"), "{ not json")?;
    assert_invalid(&load_err(&dir)?, &["config.json"]);
    Ok(())
}

#[test]
fn no_weights_is_invalid() -> Result<()> {
    let dir = scratch("empty")?;
    assert_invalid(&load_err(&dir)?, &["no model.safetensors"]);
    std::fs::write(dir.join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{}")?;
    assert_invalid(&load_err(&dir)?, &["not a valid safetensors file"]);
    Ok(())
}

#[test]
fn sharded_f32_checkpoint_loads() -> Result<()> {
    // Two shards, widened to f32 (exact from bf16): the same model.
    let dir = scratch("sharded")?;
    let t = tensors()?
        .iter()
        .map(|x| x.to_dtype(Dtype::F32))
        .collect::<Result<Vec<_>>>()?;
    let (a, b): (Vec<_>, Vec<_>) = t.into_iter().partition(|x| x.name.contains("layers.1."));
    write_sharded(&dir, &[&a, &b])?;
    let model = BurnQwen2::load_dir(&dir, Device::CPU)?;
    generate::check_greedy(&model, TINY_QWEN2)
}
