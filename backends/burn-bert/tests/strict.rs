//! Strict loading: broken copies of the fixtures, built here in a temporary
//! directory, each fail with an invalid-model error naming the problem; and
//! the layouts real checkpoints use (sharded, f16/bf16 on disk) load.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn_bert::BurnBert;
use gllm_api::{BackendError, Device, EncodedInput, ErrorKind, InferenceBackend, Task};
use gllm_testkit::strict::{
    Dtype, Edit, StoredTensor, assert_invalid_model as assert_invalid, edited_model, load_error,
    read_tensors, scratch_copy, write_sharded, write_tensors, write_truncated,
};
use gllm_testkit::{fixture, json_u32s, read_json};

/// tiny-bert's configuration files.
const CONFIG: [&str; 4] = [
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// A fresh copy of tiny-bert's configuration files (no weights) in a temporary directory.
fn scratch(name: &str) -> Result<PathBuf> {
    scratch_copy(&format!("burn-bert-{name}"), &fixture("tiny-bert"), &CONFIG)
}

/// A fresh copy of tiny-bert with its weights changed by `edit`.
fn edited(name: &str, edit: Edit) -> Result<PathBuf> {
    edited_model(
        &format!("burn-bert-{name}"),
        &fixture("tiny-bert"),
        &CONFIG,
        &[edit],
    )
}

/// tiny-bert's weights file.
fn weights() -> PathBuf {
    fixture("tiny-bert").join("model.safetensors")
}

/// tiny-bert's tensors, sorted by name.
fn tensors() -> Result<Vec<StoredTensor>> {
    read_tensors(&weights())
}

fn load_err(dir: &Path) -> Result<BackendError> {
    load_error(BurnBert::load_dir(dir, Task::Embed, Device::CPU), dir)
}

#[test]
fn a_removed_tensor_is_named() -> Result<()> {
    let dir = edited("removed", Edit::Remove("encoder.layer.1.output.dense.bias"))?;
    assert_invalid(
        &load_err(&dir)?,
        &["missing tensor `encoder.layer.1.output.dense.bias` (expected shape [32])"],
    );
    Ok(())
}

#[test]
fn a_renamed_tensor_is_named_twice() -> Result<()> {
    let edit = Edit::Rename(
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.0.intermediate.dense.kernel",
    );
    let dir = edited("renamed", edit)?;
    assert_invalid(
        &load_err(&dir)?,
        &[
            "missing tensor `encoder.layer.0.intermediate.dense.weight` (expected shape [64, 32])",
            "unexpected tensor `encoder.layer.0.intermediate.dense.kernel` (shape [64, 32])",
        ],
    );
    Ok(())
}

#[test]
fn a_wrong_shape_names_both_shapes() -> Result<()> {
    // [32, 32] -> [16, 32]
    let edit = Edit::Shrink("encoder.layer.0.attention.self.query.weight");
    let dir = edited("shape", edit)?;
    assert_invalid(
        &load_err(&dir)?,
        &[
            "tensor `encoder.layer.0.attention.self.query.weight` has shape [16, 32], expected [32, 32]",
        ],
    );
    Ok(())
}

#[test]
fn a_truncated_file_is_reported() -> Result<()> {
    let dir = scratch("truncated")?;
    write_truncated(&weights(), &dir.join("model.safetensors"), 1000)?;
    assert_invalid(&load_err(&dir)?, &["model.safetensors", "truncated"]);
    Ok(())
}

#[test]
fn a_wrong_hidden_size_in_the_config_is_reported() -> Result<()> {
    let dir = scratch("hidden")?;
    write_tensors(&dir.join("model.safetensors"), &tensors()?)?;
    let config = std::fs::read_to_string(dir.join("config.json"))?;
    let config = config.replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    assert!(config.contains("\"hidden_size\": 64"));
    std::fs::write(dir.join("config.json"), config)?;
    assert_invalid(
        &load_err(&dir)?,
        &["tensor `embeddings.word_embeddings.weight` has shape [30522, 32], expected [30522, 64]"],
    );
    Ok(())
}

#[test]
fn an_unexpected_head_on_an_embedder_is_named() -> Result<()> {
    let dir = scratch("extra")?;
    let mut t = tensors()?;
    t.push(StoredTensor {
        name: "classifier.weight".into(),
        dtype: Dtype::F32,
        shape: vec![1, 32],
        data: vec![0; 128],
    });
    write_tensors(&dir.join("model.safetensors"), &t)?;
    assert_invalid(&load_err(&dir)?, &["unexpected tensor `classifier.weight`"]);
    Ok(())
}

#[test]
fn missing_weights_are_reported() -> Result<()> {
    let dir = scratch("noweights")?;
    assert_invalid(&load_err(&dir)?, &["no model.safetensors"]);
    Ok(())
}

/// Embeddings of the tiny-bert reference sentences from the model in `dir`.
fn embed(dir: &Path) -> Result<Vec<Vec<f32>>> {
    let reference = read_json(&fixture("tiny-bert").join("reference.json"))?;
    let inputs: Vec<EncodedInput> = reference["input_ids"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("reference.json: no input_ids"))?
        .iter()
        .map(|v| EncodedInput::new(json_u32s(v)))
        .collect();
    let model = BurnBert::load_dir(dir, Task::Embed, Device::CPU)?;
    Ok(model.embed(&inputs)?)
}

#[test]
fn sharded_checkpoints_load() -> Result<()> {
    let dir = scratch("sharded")?;
    let t = tensors()?;
    let (a, b) = t.split_at(t.len() / 2);
    write_sharded(&dir, &[a, b])?;
    assert_eq!(embed(&dir)?, embed(&fixture("tiny-bert"))?);
    Ok(())
}

#[test]
fn half_precision_weights_load() -> Result<()> {
    let want = embed(&fixture("tiny-bert"))?;
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = scratch(&format!("{dtype:?}"))?;
        let t = tensors()?
            .iter()
            .map(|e| e.to_dtype(dtype))
            .collect::<Result<Vec<_>>>()?;
        write_tensors(&dir.join("model.safetensors"), &t)?;
        let got = embed(&dir)?;
        for (g, w) in got.iter().zip(&want) {
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 0.05, "{dtype:?}: embeddings differ by {d}");
        }
    }
    Ok(())
}

#[test]
fn bad_inputs_are_invalid_input() {
    let model = BurnBert::load_dir(&fixture("tiny-bert"), Task::Embed, Device::CPU).expect("loads");
    let cases = [
        (EncodedInput::new(vec![]), "no tokens"),
        (
            EncodedInput::new(vec![101, 40000, 102]),
            "outside the vocabulary",
        ),
        (
            EncodedInput {
                ids: vec![101, 102],
                type_ids: vec![0],
            },
            "token type ids",
        ),
        (
            EncodedInput {
                ids: vec![101, 102],
                type_ids: vec![0, 5],
            },
            "type_vocab_size",
        ),
    ];
    for (input, needle) in cases {
        let e = model.embed(&[input]).expect_err("invalid");
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert!(e.message.contains(needle), "`{needle}` not in {e}");
    }
    let e = model
        .rerank(&[EncodedInput::new(vec![101, 102])])
        .expect_err("not a reranker");
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
}

#[test]
fn long_inputs_are_truncated_to_max_seq_length() {
    let model = BurnBert::load_dir(&fixture("tiny-bert"), Task::Embed, Device::CPU).expect("loads");
    let long: Vec<u32> = std::iter::once(101)
        .chain((0..400).map(|k| 2000 + k))
        .chain(std::iter::once(102))
        .collect();
    let mut cut: Vec<u32> = long[..255].to_vec();
    cut.push(102);
    let a = model.embed(&[EncodedInput::new(long)]).expect("embeds");
    let b = model.embed(&[EncodedInput::new(cut)]).expect("embeds");
    assert_eq!(a, b);
}
