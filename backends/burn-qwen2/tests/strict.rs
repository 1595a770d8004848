//! Strict loading: broken copies of tiny-qwen2, built here in a temporary
//! directory, each fail with an invalid-model error naming the tensor and its
//! shapes; and the layouts real checkpoints use (sharded, f32 on disk, a
//! separate `lm_head`) load and give the reference tokens.

use std::path::{Path, PathBuf};

use burn_qwen2::BurnQwen2;
use gllm_api::{BackendError, Device, ErrorKind};
use gllm_testkit::generate::{self, tiny_qwen2_dir};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// A fresh directory holding tiny-qwen2's config.json (no weights).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-qwen2-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        tiny_qwen2_dir().join("config.json"),
        dir.join("config.json"),
    )
    .expect("copy config");
    dir
}

/// tiny-qwen2's tensors, sorted by name.
fn tensors() -> Tensors {
    let bytes = std::fs::read(tiny_qwen2_dir().join("model.safetensors")).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("parse");
    let mut v: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, bytes).expect("write");
}

fn load_err(dir: &Path) -> BackendError {
    match BurnQwen2::load_dir(dir, Device::CPU) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

fn assert_invalid(e: &BackendError, needles: &[&str]) {
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    for n in needles {
        assert!(e.message.contains(n), "message lacks {n:?}: {e}");
    }
}

fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    json[key] = value;
    std::fs::write(&path, json.to_string()).expect("write");
}

#[test]
fn a_removed_tensor_is_named() {
    let dir = scratch("removed");
    let mut t = tensors();
    t.retain(|x| x.0 != "model.layers.1.mlp.up_proj.weight");
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &[
            "missing tensor `model.layers.1.mlp.up_proj.weight`",
            "[64, 32]",
        ],
    );
}

#[test]
fn a_renamed_tensor_is_missing_and_unexpected() {
    let dir = scratch("renamed");
    let mut t = tensors();
    for x in &mut t {
        if x.0 == "model.norm.weight" {
            x.0 = "model.final_norm.weight".into();
        }
    }
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &[
            "missing tensor `model.norm.weight` (expected shape [32])",
            "unexpected tensor `model.final_norm.weight` (shape [32])",
        ],
    );
}

#[test]
fn a_mis_shaped_tensor_is_named_with_both_shapes() {
    let dir = scratch("shape");
    let mut t = tensors();
    for x in &mut t {
        if x.0 == "model.layers.0.self_attn.k_proj.bias" {
            x.2 = vec![17];
            x.3 = vec![0u8; 17 * 2];
        }
        if x.0 == "model.layers.0.self_attn.o_proj.weight" {
            x.2 = vec![16, 64];
        }
    }
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &[
            "tensor `model.layers.0.self_attn.k_proj.bias` has shape [17], expected [16]",
            "tensor `model.layers.0.self_attn.o_proj.weight` has shape [16, 64], expected [32, 32]",
        ],
    );
}

#[test]
fn an_unreadable_dtype_is_named() {
    let dir = scratch("dtype");
    let mut t = tensors();
    for x in &mut t {
        if x.0 == "model.layers.0.input_layernorm.weight" {
            x.1 = Dtype::I16;
        }
    }
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &["tensor `model.layers.0.input_layernorm.weight`", "I16"],
    );
}

#[test]
fn an_untied_model_needs_its_lm_head() {
    let dir = scratch("untied-missing");
    set_config(&dir, "tie_word_embeddings", false.into());
    write(&dir.join("model.safetensors"), &tensors());
    assert_invalid(
        &load_err(&dir),
        &["missing tensor `lm_head.weight` (expected shape [151936, 32])"],
    );
}

#[test]
fn a_separate_lm_head_is_used() -> anyhow::Result<()> {
    // An untied copy of the tied model: the same function, through the separate head.
    let dir = scratch("untied");
    set_config(&dir, "tie_word_embeddings", false.into());
    let mut t = tensors();
    let embed = t
        .iter()
        .find(|x| x.0 == "model.embed_tokens.weight")
        .cloned()
        .expect("embedding");
    t.push(("lm_head.weight".into(), embed.1, embed.2, embed.3));
    write(&dir.join("model.safetensors"), &t);
    let model = BurnQwen2::load_dir(&dir, Device::CPU)?;
    generate::check_logits_last(&model)?;
    generate::check_greedy(&model)
}

#[test]
fn bad_config_values_are_invalid() {
    let dir = scratch("config");
    write(&dir.join("model.safetensors"), &tensors());
    set_config(&dir, "num_key_value_heads", 3.into());
    assert_invalid(&load_err(&dir), &["num_key_value_heads 3"]);
    set_config(&dir, "num_key_value_heads", 2.into());
    set_config(&dir, "hidden_size", serde_json::Value::Null);
    assert_invalid(&load_err(&dir), &["missing `hidden_size`"]);
    std::fs::write(dir.join("config.json"), "{ not json").expect("write");
    assert_invalid(&load_err(&dir), &["config.json"]);
}

#[test]
fn no_weights_is_invalid() {
    let dir = scratch("empty");
    assert_invalid(&load_err(&dir), &["no model.safetensors"]);
    std::fs::write(dir.join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{}").expect("write");
    assert_invalid(&load_err(&dir), &["not a valid safetensors file"]);
}

#[test]
fn sharded_f32_checkpoint_loads() -> anyhow::Result<()> {
    // Two shards, widened to f32 (exact from bf16): the same model.
    let dir = scratch("sharded");
    let t: Tensors = tensors()
        .into_iter()
        .map(|(n, _, s, b)| {
            let f: Vec<u8> = b
                .chunks_exact(2)
                .flat_map(|c| {
                    half::bf16::from_le_bytes([c[0], c[1]])
                        .to_f32()
                        .to_le_bytes()
                })
                .collect();
            (n, Dtype::F32, s, f)
        })
        .collect();
    let (a, b): (Tensors, Tensors) = t.into_iter().partition(|x| x.0.contains("layers.1."));
    write(&dir.join("model-00001-of-00002.safetensors"), &a);
    write(&dir.join("model-00002-of-00002.safetensors"), &b);
    let mut map = serde_json::Map::new();
    for (list, file) in [
        (&a, "model-00001-of-00002.safetensors"),
        (&b, "model-00002-of-00002.safetensors"),
    ] {
        for x in list {
            map.insert(x.0.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    let model = BurnQwen2::load_dir(&dir, Device::CPU)?;
    generate::check_greedy(&model)
}
