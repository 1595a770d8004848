//! Strict loading: a checkpoint with a tensor removed, renamed or mis-shaped is an
//! invalid-model error naming the tensor (temp copies of the fixtures, modified): the
//! shared schema-driven suite on the safetensors fixtures, and GGUF copies here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Value};
use gllm_api::{BackendError, Device, ErrorKind, ModelSpec, Task, WeightFormat};
use gllm_testkit::decoder_schema::check_decoder_schema;
use gllm_testkit::fixture;
use gllm_testkit::generate::{DecoderFixture, TINY_QWEN2, TINY_QWEN3};
use gllm_testkit::strict::{Edit, assert_invalid_model as assert_invalid, load_error, scratch_dir};

fn temp_dir(tag: &str) -> Result<PathBuf> {
    scratch_dir(&format!("candle-qwen2-{tag}"))
}

fn edited_gguf(tag: &str, edit: Edit) -> Result<PathBuf> {
    edited_gguf_of("gguf/tiny-qwen2-f16.gguf", tag, edit)
}

fn edited_gguf_of(file: &str, tag: &str, edit: Edit) -> Result<PathBuf> {
    let path = fixture(file);
    let mut f = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut f)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for n in names {
        let q = content.tensor(&mut f, n, &candle_core::Device::Cpu)?;
        let t = q.dequantize(&candle_core::Device::Cpu)?;
        tensors.push((n.clone(), t.dims().to_vec(), (t, q.dtype())));
    }
    edit.apply(&mut tensors, |(t, dt), shape| {
        // A fresh tensor (a narrowed view would still share the full storage).
        let mut values = t.flatten_all()?.to_vec1::<f32>()?;
        values.truncate(shape.iter().product::<usize>());
        let shrunk = candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?;
        Ok((shrunk, *dt))
    })?;
    let qs = tensors
        .iter()
        .map(|(n, _, (t, dt))| QTensor::quantize(t, *dt).map(|q| (n.clone(), q)))
        .collect::<Result<Vec<_>, _>>()?;
    let meta: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let out = temp_dir(tag)?.join("model.gguf");
    let mut w = std::fs::File::create(&out)?;
    gguf_file::write(&mut w, &meta, &refs)?;
    Ok(out)
}

fn load_err(path: &Path, format: WeightFormat) -> Result<BackendError> {
    let spec = ModelSpec {
        id: "strict".into(),
        task: Task::Generate,
        path: path.to_path_buf(),
        format,
        architecture: "qwen2".into(),
        dtype: None,
        options: BTreeMap::new(),
    };
    let res = candle_qwen2::load(&spec, Device::CPU);
    let _ = std::fs::remove_dir_all(if path.is_dir() {
        path
    } else {
        path.parent().context("parent")?
    });
    load_error(res, path)
}

fn schema_suite(fx: DecoderFixture) -> Result<()> {
    check_decoder_schema(fx, "candle-qwen2", &|dir| {
        let mut spec = fx.spec();
        spec.path = dir.to_path_buf();
        candle_qwen2::load(&spec, Device::CPU).map(drop)
    })
}

#[test]
fn qwen2_schema_suite() -> Result<()> {
    schema_suite(TINY_QWEN2)
}

#[test]
fn qwen3_schema_suite() -> Result<()> {
    schema_suite(TINY_QWEN3)
}

#[test]
fn qwen3_gguf_without_a_head_norm_is_named() -> Result<()> {
    let p = edited_gguf_of(
        "gguf/tiny-qwen3-f16.gguf",
        "gguf-qwen3-norm",
        Edit::Remove("blk.1.attn_k_norm.weight"),
    )?;
    let e = load_err(&p, WeightFormat::Gguf)?;
    assert_invalid(
        &e,
        &["missing tensor `blk.1.attn_k_norm.weight` (shape [16])"],
    );
    Ok(())
}

#[test]
fn gguf_missing_tensor() -> Result<()> {
    let p = edited_gguf("gguf-missing", Edit::Remove("blk.0.ffn_down.weight"))?;
    let e = load_err(&p, WeightFormat::Gguf)?;
    assert_invalid(&e, &["missing tensor `blk.0.ffn_down.weight`", "[32, 64]"]);
    Ok(())
}

#[test]
fn gguf_renamed_tensor() -> Result<()> {
    let p = edited_gguf(
        "gguf-renamed",
        Edit::Rename("blk.1.attn_v.bias", "blk.1.attn_v.b"),
    )?;
    let e = load_err(&p, WeightFormat::Gguf)?;
    assert_invalid(&e, &["missing tensor `blk.1.attn_v.bias`"]);
    Ok(())
}

#[test]
fn gguf_wrong_shape() -> Result<()> {
    let p = edited_gguf("gguf-shape", Edit::Shrink("blk.1.ffn_gate.weight"))?;
    let e = load_err(&p, WeightFormat::Gguf)?;
    assert_invalid(
        &e,
        &[
            "`blk.1.ffn_gate.weight`",
            "shape [32, 32]",
            "expected [64, 32]",
        ],
    );
    Ok(())
}

#[test]
fn gguf_unexpected_tensor() -> Result<()> {
    let p = edited_gguf("gguf-extra", Edit::Add("blk.7.attn_norm.weight"))?;
    let e = load_err(&p, WeightFormat::Gguf)?;
    assert_invalid(&e, &["unexpected tensor `blk.7.attn_norm.weight`"]);
    Ok(())
}

#[test]
fn missing_files_are_invalid_model() -> Result<()> {
    let dir = temp_dir("no-weights")?;
    std::fs::copy(fixture("tiny-qwen2/config.json"), dir.join("config.json"))?;
    let e = load_err(&dir, WeightFormat::Safetensors)?;
    assert_invalid(&e, &["model.safetensors"]);
    Ok(())
}

#[test]
fn unknown_gguf_architecture_is_unsupported() -> Result<()> {
    let path = fixture("gguf/tiny-qwen2-f16.gguf");
    let mut f = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut f)?;
    let arch = Value::String("gpt2".into());
    let meta: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if k == "general.architecture" {
                    &arch
                } else {
                    v
                },
            )
        })
        .collect();
    let out = temp_dir("gguf-arch")?.join("model.gguf");
    let q = content.tensor(&mut f, "output_norm.weight", &candle_core::Device::Cpu)?;
    gguf_file::write(
        &mut std::fs::File::create(&out)?,
        &meta,
        &[("output_norm.weight", &q)],
    )?;
    let e = load_err(&out, WeightFormat::Gguf)?;
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("gpt2"));
    Ok(())
}
