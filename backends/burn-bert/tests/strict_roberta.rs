//! Strict loading of the RoBERTa family: broken copies of tiny-roberta and
//! tiny-xlm-roberta-reranker fail naming the tensor, and the layouts real
//! checkpoints use (the `roberta.` prefix, a masked-LM head or a pooler the task
//! does not use) load and give the same numbers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn_bert::BurnBert;
use gllm_api::{BackendError, Device, EncodedInput, InferenceBackend, Task};
use gllm_testkit::strict::{
    Dtype, Edit, StoredTensor, assert_invalid_model as assert_invalid, edited_model, load_error,
    read_tensors, scratch_copy, write_tensors,
};
use gllm_testkit::{fixture, json_u32s, read_json};

const EMBEDDER: &str = "tiny-roberta";
const EMBEDDER_FILES: [&str; 4] = [
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];
const RERANKER: &str = "tiny-xlm-roberta-reranker";
const RERANKER_FILES: [&str; 1] = ["config.json"];

fn task_of(name: &str) -> Task {
    if name == RERANKER {
        Task::Rerank
    } else {
        Task::Embed
    }
}

fn files_of(name: &str) -> &'static [&'static str] {
    if name == RERANKER {
        &RERANKER_FILES
    } else {
        &EMBEDDER_FILES
    }
}

fn load_err(name: &str, dir: &Path) -> Result<BackendError> {
    load_error(BurnBert::load_dir(dir, task_of(name), Device::CPU), dir)
}

/// A copy of fixture `name` with its weights changed by `edit`.
fn edited(name: &str, tag: &str, edit: Edit) -> Result<PathBuf> {
    edited_model(
        &format!("burn-bert-{tag}"),
        &fixture(name),
        files_of(name),
        &[edit],
    )
}

/// A copy of fixture `name` whose weights are `tensors`.
fn rewritten(name: &str, tag: &str, tensors: &[StoredTensor]) -> Result<PathBuf> {
    let dir = scratch_copy(&format!("burn-bert-{tag}"), &fixture(name), files_of(name))?;
    write_tensors(&dir.join("model.safetensors"), tensors)?;
    Ok(dir)
}

fn tensors(name: &str) -> Result<Vec<StoredTensor>> {
    read_tensors(&fixture(name).join("model.safetensors"))
}

fn zeros(name: &str, shape: &[usize]) -> StoredTensor {
    StoredTensor {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: vec![0; 4 * shape.iter().product::<usize>()],
    }
}

/// tiny-roberta's reference sentences embedded by the model in `dir`.
fn embed(dir: &Path) -> Result<Vec<Vec<f32>>> {
    let reference = read_json(&fixture(EMBEDDER).join("reference.json"))?;
    let inputs: Vec<EncodedInput> = reference["input_ids"]
        .as_array()
        .context("no input_ids")?
        .iter()
        .map(|v| EncodedInput::new(json_u32s(v)))
        .collect();
    Ok(BurnBert::load_dir(dir, Task::Embed, Device::CPU)?.embed(&inputs)?)
}

/// The reranker reference's first query's pairs scored by the model in `dir`.
fn rerank(dir: &Path) -> Result<Vec<Vec<f32>>> {
    let reference = read_json(&fixture(RERANKER).join("reference.json"))?;
    let pairs: Vec<EncodedInput> = reference["queries"][0]["input_ids"]
        .as_array()
        .context("no input_ids")?
        .iter()
        .map(|v| EncodedInput::new(json_u32s(v)))
        .collect();
    Ok(BurnBert::load_dir(dir, Task::Rerank, Device::CPU)?.rerank(&pairs)?)
}

#[test]
fn a_missing_classification_head_tensor_is_named() -> Result<()> {
    let dir = edited(
        RERANKER,
        "xlmr-no-out-proj",
        Edit::Remove("classifier.out_proj.bias"),
    )?;
    assert_invalid(
        &load_err(RERANKER, &dir)?,
        &["missing tensor `classifier.out_proj.bias` (expected shape [1])"],
    );
    Ok(())
}

#[test]
fn a_misshaped_position_table_names_both_shapes() -> Result<()> {
    let dir = edited(
        RERANKER,
        "xlmr-positions",
        Edit::Shrink("roberta.embeddings.position_embeddings.weight"),
    )?;
    assert_invalid(
        &load_err(RERANKER, &dir)?,
        &[
            "tensor `roberta.embeddings.position_embeddings.weight` has shape [257, 16], expected [514, 16]",
        ],
    );
    Ok(())
}

#[test]
fn a_bert_style_head_on_a_roberta_reranker_is_named() -> Result<()> {
    // RobertaForSequenceClassification has `classifier.dense` + `classifier.out_proj`;
    // BERT's single `classifier` layer is not it.
    let mut t = tensors(RERANKER)?;
    t.retain(|x| !x.name.starts_with("classifier.out_proj"));
    t.push(zeros("classifier.weight", &[1, 16]));
    t.push(zeros("classifier.bias", &[1]));
    let dir = rewritten(RERANKER, "xlmr-bert-head", &t)?;
    assert_invalid(
        &load_err(RERANKER, &dir)?,
        &[
            "missing tensor `classifier.out_proj.weight` (expected shape [1, 16])",
            "unexpected tensor `classifier.weight` (shape [1, 16])",
        ],
    );
    Ok(())
}

#[test]
fn an_extra_layer_on_an_embedder_is_named() -> Result<()> {
    let mut t = tensors(EMBEDDER)?;
    t.push(zeros("encoder.layer.2.output.dense.bias", &[32]));
    let dir = rewritten(EMBEDDER, "roberta-extra-layer", &t)?;
    assert_invalid(
        &load_err(EMBEDDER, &dir)?,
        &["unexpected tensor `encoder.layer.2.output.dense.bias` (shape [32])"],
    );
    Ok(())
}

#[test]
fn a_prefixed_masked_lm_checkpoint_embeds_the_same() -> Result<()> {
    // RobertaForMaskedLM (as GraphCodeBERT and CodeBERT ship): every encoder tensor
    // under `roberta.`, the pooler beside them, and an `lm_head` the embedder does not use.
    let mut t: Vec<StoredTensor> = tensors(EMBEDDER)?
        .into_iter()
        .map(|mut x| {
            x.name = format!("roberta.{}", x.name);
            x
        })
        .collect();
    for (name, shape) in [
        ("lm_head.dense.weight", vec![32, 32]),
        ("lm_head.dense.bias", vec![32]),
        ("lm_head.layer_norm.weight", vec![32]),
        ("lm_head.layer_norm.bias", vec![32]),
        ("lm_head.bias", vec![50265]),
    ] {
        t.push(zeros(name, &shape));
    }
    let dir = rewritten(EMBEDDER, "roberta-prefixed", &t)?;
    assert_eq!(embed(&dir)?, embed(&fixture(EMBEDDER))?);
    Ok(())
}

#[test]
fn an_unused_pooler_on_a_reranker_is_accepted() -> Result<()> {
    // Some RoBERTa cross-encoders keep the pooler of the model they were tuned from;
    // RobertaForSequenceClassification does not use it.
    let mut t = tensors(RERANKER)?;
    t.push(zeros("roberta.pooler.dense.weight", &[16, 16]));
    t.push(zeros("roberta.pooler.dense.bias", &[16]));
    let dir = rewritten(RERANKER, "xlmr-pooler", &t)?;
    assert_eq!(rerank(&dir)?, rerank(&fixture(RERANKER))?);
    Ok(())
}

#[test]
fn segment_ids_beyond_the_one_token_type_are_invalid_input() {
    let model = BurnBert::load_dir(&fixture(RERANKER), Task::Rerank, Device::CPU).expect("loads");
    let e = model
        .rerank(&[EncodedInput {
            ids: vec![0, 5, 2, 2, 6, 2],
            type_ids: vec![0, 0, 0, 1, 1, 1],
        }])
        .expect_err("type_vocab_size is 1");
    assert_eq!(e.kind, gllm_api::ErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains("type_vocab_size 1"), "{e}");
}

#[test]
fn inputs_longer_than_the_position_table_are_cut_to_512() {
    // 514 position rows, positions from 2: 512 tokens, the last one kept.
    let model = BurnBert::load_dir(&fixture(RERANKER), Task::Rerank, Device::CPU).expect("loads");
    assert_eq!(model.info().max_positions, 512);
    let long: Vec<u32> = std::iter::once(0)
        .chain((0..700).map(|k| 1000 + k))
        .chain(std::iter::once(2))
        .collect();
    let mut cut = long[..511].to_vec();
    cut.push(2);
    let a = model.rerank(&[EncodedInput::new(long)]).expect("scores");
    let b = model.rerank(&[EncodedInput::new(cut)]).expect("scores");
    assert_eq!(a, b);
}
