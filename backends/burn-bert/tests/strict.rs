//! Strict loading: broken copies of the fixtures, built here in a temporary
//! directory, each fail with an invalid-model error naming the problem; and
//! the layouts real checkpoints use (sharded, f16/bf16 on disk) load.

use std::path::{Path, PathBuf};

use burn_bert::BurnBert;
use gllm_api::{BackendError, Device, EncodedInput, ErrorKind, InferenceBackend, Task};
use gllm_testkit::{fixture, json_u32s, read_json};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// A fresh copy of tiny-bert's configuration files (no weights) in a temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-bert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("temp dir");
    let src = fixture("tiny-bert");
    for f in [
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy fixture");
    }
    dir
}

/// tiny-bert's tensors, as (name, dtype, shape, bytes).
fn tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture("tiny-bert").join("model.safetensors")).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("parse");
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, bytes).expect("write");
}

fn load_err(dir: &Path) -> BackendError {
    match BurnBert::load_dir(dir, Task::Embed, Device::CPU) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

fn assert_invalid(e: &BackendError, needles: &[&str]) {
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    for n in needles {
        assert!(e.message.contains(n), "`{n}` not in: {e}");
    }
}

#[test]
fn a_removed_tensor_is_named() {
    let dir = scratch("removed");
    let mut t = tensors();
    t.retain(|(n, ..)| n != "encoder.layer.1.output.dense.bias");
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &["missing tensor `encoder.layer.1.output.dense.bias` (expected shape [32])"],
    );
}

#[test]
fn a_renamed_tensor_is_named_twice() {
    let dir = scratch("renamed");
    let mut t = tensors();
    for e in &mut t {
        if e.0 == "encoder.layer.0.intermediate.dense.weight" {
            e.0 = "encoder.layer.0.intermediate.dense.kernel".into();
        }
    }
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &[
            "missing tensor `encoder.layer.0.intermediate.dense.weight` (expected shape [64, 32])",
            "unexpected tensor `encoder.layer.0.intermediate.dense.kernel` (shape [64, 32])",
        ],
    );
}

#[test]
fn a_wrong_shape_names_both_shapes() {
    let dir = scratch("shape");
    let mut t = tensors();
    for e in &mut t {
        if e.0 == "encoder.layer.0.attention.self.query.weight" {
            e.2 = vec![16, 32];
            e.3.truncate(16 * 32 * 4);
        }
    }
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(
        &load_err(&dir),
        &[
            "tensor `encoder.layer.0.attention.self.query.weight` has shape [16, 32], expected [32, 32]",
        ],
    );
}

#[test]
fn a_truncated_file_is_reported() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(fixture("tiny-bert").join("model.safetensors")).expect("read");
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 1000]).expect("write");
    assert_invalid(&load_err(&dir), &["model.safetensors", "truncated"]);
}

#[test]
fn a_wrong_hidden_size_in_the_config_is_reported() {
    let dir = scratch("hidden");
    write(&dir.join("model.safetensors"), &tensors());
    let config = std::fs::read_to_string(dir.join("config.json")).expect("read");
    let config = config.replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    assert!(config.contains("\"hidden_size\": 64"));
    std::fs::write(dir.join("config.json"), config).expect("write");
    assert_invalid(
        &load_err(&dir),
        &["tensor `embeddings.word_embeddings.weight` has shape [30522, 32], expected [30522, 64]"],
    );
}

#[test]
fn an_unexpected_head_on_an_embedder_is_named() {
    let dir = scratch("extra");
    let mut t = tensors();
    t.push((
        "classifier.weight".into(),
        Dtype::F32,
        vec![1, 32],
        vec![0; 128],
    ));
    write(&dir.join("model.safetensors"), &t);
    assert_invalid(&load_err(&dir), &["unexpected tensor `classifier.weight`"]);
}

#[test]
fn missing_weights_are_reported() {
    let dir = scratch("noweights");
    assert_invalid(&load_err(&dir), &["no model.safetensors"]);
}

/// Embeddings of the tiny-bert reference sentences from the model in `dir`.
fn embed(dir: &Path) -> Vec<Vec<f32>> {
    let reference = read_json(&fixture("tiny-bert").join("reference.json")).expect("reference");
    let inputs: Vec<EncodedInput> = reference["input_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| EncodedInput::new(json_u32s(v)))
        .collect();
    let model = BurnBert::load_dir(dir, Task::Embed, Device::CPU).expect("loads");
    model.embed(&inputs).expect("embeds")
}

#[test]
fn sharded_checkpoints_load() {
    let dir = scratch("sharded");
    let t = tensors();
    let (a, b) = t.split_at(t.len() / 2);
    write(&dir.join("model-00001-of-00002.safetensors"), a);
    write(&dir.join("model-00002-of-00002.safetensors"), b);
    let map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|e| (e.0.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(
            b.iter()
                .map(|e| (e.0.clone(), "model-00002-of-00002.safetensors".into())),
        )
        .collect();
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("write");
    assert_eq!(embed(&dir), embed(&fixture("tiny-bert")));
}

#[test]
fn half_precision_weights_load() {
    let want = embed(&fixture("tiny-bert"));
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = scratch(&format!("{dtype:?}"));
        let t: Vec<_> = tensors()
            .into_iter()
            .map(|(n, _, s, b)| {
                let out: Vec<u8> = b
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        match dtype {
                            Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                            _ => half::bf16::from_f32(x).to_le_bytes(),
                        }
                    })
                    .collect();
                (n, dtype, s, out)
            })
            .collect();
        write(&dir.join("model.safetensors"), &t);
        let got = embed(&dir);
        for (g, w) in got.iter().zip(&want) {
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 0.05, "{dtype:?}: embeddings differ by {d}");
        }
    }
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
