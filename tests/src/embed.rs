//! The conformance suite of `embed` and `rerank` backends: parity with the
//! sentence-transformers references of the fixtures, and batch invariance.
//!
//! Each check takes a factory, a device and a fixture ([`TINY_BERT`],
//! [`TINY_ROBERTA`]; [`TINY_CROSS_ENCODER`], [`TINY_XLM_ROBERTA_RERANKER`]), so a
//! built-in or plugin backend runs the same checks on every device it supports
//! and for every architecture it serves:
//!
//! ```text
//! gllm_testkit::embed::embed_parity(&burn_bert::FACTORY, Device::CPU, &TINY_ROBERTA, 1e-5)?;
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use gllm_api::{
    BackendFactory, Device, EncodedInput, InferenceBackend, ModelSpec, Task, WeightFormat,
};
use serde_json::Value;

use crate::{
    assert_close, cosine, fixture, json_f32s, json_u32s, read_json, read_tensor_f32, real_model,
};

/// An embedding fixture: a sentence-transformers model directory whose
/// `reference.json` holds `input_ids` and `embeddings`, and whose
/// `reference.safetensors` holds each sentence's `last_hidden_state.<i>`.
#[derive(Debug, Clone, Copy)]
pub struct EncoderFixture {
    /// The directory under the fixtures.
    pub name: &'static str,
    /// The embedding width.
    pub hidden: usize,
    /// The vocabulary size the backend reports.
    pub vocab_size: usize,
    /// The longest input the backend reports (`max_seq_length`).
    pub max_positions: usize,
    /// The tokens that open and close a sequence (`[CLS]`/`[SEP]`, `<s>`/`</s>`).
    pub bos_eos: (u32, u32),
}

/// tiny-bert: BertModel, mean pooling, WordPiece.
pub const TINY_BERT: EncoderFixture = EncoderFixture {
    name: "tiny-bert",
    hidden: 32,
    vocab_size: 30522,
    max_positions: 256,
    bos_eos: (101, 102),
};

/// tiny-roberta: RobertaModel (positions from 2), CLS pooling, byte-level BPE.
pub const TINY_ROBERTA: EncoderFixture = EncoderFixture {
    name: "tiny-roberta",
    hidden: 32,
    vocab_size: 50265,
    max_positions: 128,
    bos_eos: (0, 2),
};

/// A cross-encoder fixture: `reference.json` holds, per query, pair `input_ids`,
/// `token_type_ids`, raw `logits` and `scores_sigmoid`.
#[derive(Debug, Clone, Copy)]
pub struct CrossEncoderFixture {
    /// The directory under the fixtures.
    pub name: &'static str,
    /// The longest pair the backend reports.
    pub max_positions: usize,
    /// The separator to append to an empty document's recorded ids, for a fixture
    /// whose recorded ids differ from what its logits were computed on (below).
    pub empty_document_sep: Option<u32>,
}

/// tiny-cross-encoder: BertForSequenceClassification. Its reference records an
/// empty document's pair as `[CLS] query [SEP]`, but the logit was computed on
/// what BERT's pair template gives, `[CLS] query [SEP] [SEP]` with the last
/// `[SEP]` in segment 1 (the logit matches that to 1e-6, not the recorded ids).
pub const TINY_CROSS_ENCODER: CrossEncoderFixture = CrossEncoderFixture {
    name: "tiny-cross-encoder",
    max_positions: 512,
    empty_document_sep: Some(102),
};

/// tiny-xlm-roberta-reranker: XLMRobertaForSequenceClassification (RoBERTa's head,
/// no pooler), SentencePiece-Unigram pairs `<s> q </s></s> d </s>`, 514 position
/// rows for 512 tokens.
pub const TINY_XLM_ROBERTA_RERANKER: CrossEncoderFixture = CrossEncoderFixture {
    name: "tiny-xlm-roberta-reranker",
    max_positions: 512,
    empty_document_sep: None,
};

/// The spec of a safetensors BERT model directory for `task`.
pub fn spec(dir: &Path, task: Task) -> ModelSpec {
    ModelSpec {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        task,
        path: dir.to_path_buf(),
        format: WeightFormat::Safetensors,
        architecture: "bert".to_string(),
        dtype: None,
        options: BTreeMap::new(),
    }
}

/// Loads `dir` for `task` on `device` through `factory`.
pub fn load(
    factory: &dyn BackendFactory,
    dir: &Path,
    task: Task,
    device: Device,
) -> Result<Box<dyn InferenceBackend>> {
    let spec = spec(dir, task);
    if let Some(why) = factory.capabilities().mismatch(&spec, device) {
        bail!("{} cannot load {}: {why}", factory.name(), dir.display());
    }
    factory.load(&spec, device).map_err(|e| {
        anyhow::anyhow!(
            "{} loading {} on {device}: {e}",
            factory.name(),
            dir.display()
        )
    })
}

/// The sentences' token ids of a reference (`input_ids`), as inputs.
pub fn reference_inputs(reference: &Value) -> Result<Vec<EncodedInput>> {
    let ids = reference["input_ids"]
        .as_array()
        .context("reference has no input_ids array")?;
    Ok(ids
        .iter()
        .map(|v| EncodedInput::new(json_u32s(v)))
        .collect())
}

/// A cross-encoder reference query's pairs (`input_ids` with `token_type_ids`), as recorded.
pub fn reference_pairs(query: &Value) -> Result<Vec<EncodedInput>> {
    let ids = query["input_ids"].as_array().context("no input_ids")?;
    let types = query["token_type_ids"]
        .as_array()
        .context("no token_type_ids")?;
    Ok(ids
        .iter()
        .zip(types)
        .map(|(i, t)| EncodedInput {
            ids: json_u32s(i),
            type_ids: json_u32s(t),
        })
        .collect())
}

/// The reference embeddings (`embeddings`), one row per sentence.
pub fn reference_rows(reference: &Value, key: &str) -> Result<Vec<Vec<f32>>> {
    let rows = reference[key]
        .as_array()
        .with_context(|| format!("reference has no {key} array"))?;
    Ok(rows.iter().map(json_f32s).collect())
}

/// Embeds `inputs` all in one call, then each alone, and compares every row with `want`.
pub fn check_embeddings(
    backend: &dyn InferenceBackend,
    what: &str,
    inputs: &[EncodedInput],
    want: &[Vec<f32>],
    tol: f32,
) -> Result<Vec<Vec<f32>>> {
    ensure!(
        inputs.len() == want.len(),
        "{what}: {} inputs, {} references",
        inputs.len(),
        want.len()
    );
    let together = backend.embed(inputs)?;
    ensure!(
        together.len() == inputs.len(),
        "{what}: {} rows for {} inputs",
        together.len(),
        inputs.len()
    );
    for (i, (got, want)) in together.iter().zip(want).enumerate() {
        assert_close(
            &format!("{what}: embedding {i} (all in one batch)"),
            got,
            want,
            tol,
        );
    }
    for (i, (input, want)) in inputs.iter().zip(want).enumerate() {
        let alone = backend.embed(std::slice::from_ref(input))?;
        ensure!(
            alone.len() == 1,
            "{what}: {} rows for one input",
            alone.len()
        );
        assert_close(
            &format!("{what}: embedding {i} (alone)"),
            &alone[0],
            want,
            tol,
        );
    }
    Ok(together)
}

/// The fixture's every sentence's embedding within `tol` of `reference.json`,
/// all in one batch and each alone; `info()` as the fixture says.
pub fn embed_parity(
    factory: &dyn BackendFactory,
    device: Device,
    fx: &EncoderFixture,
    tol: f32,
) -> Result<()> {
    let dir = fixture(fx.name);
    let reference = read_json(&dir.join("reference.json"))?;
    let backend = load(factory, &dir, Task::Embed, device)?;
    let info = backend.info();
    ensure!(info.task == Task::Embed, "info().task is {:?}", info.task);
    ensure!(
        info.output_dim == fx.hidden,
        "{}: info().output_dim is {}, expected {}",
        fx.name,
        info.output_dim,
        fx.hidden
    );
    ensure!(
        info.vocab_size == fx.vocab_size,
        "{}: info().vocab_size is {}",
        fx.name,
        info.vocab_size
    );
    ensure!(
        info.max_positions == fx.max_positions,
        "{}: info().max_positions is {} (max_seq_length is {})",
        fx.name,
        info.max_positions,
        fx.max_positions
    );
    let inputs = reference_inputs(&reference)?;
    let want = reference_rows(&reference, "embeddings")?;
    check_embeddings(&*backend, fx.name, &inputs, &want, tol)?;
    Ok(())
}

/// The fixture's per-sentence `last_hidden_state` (each sentence alone) within
/// `tol` of `reference.safetensors`; `hidden` computes it for one input, row-major `[tokens, hidden]`.
pub fn hidden_states(
    fx: &EncoderFixture,
    hidden: impl Fn(&EncodedInput) -> Result<Vec<f32>>,
    tol: f32,
) -> Result<()> {
    let dir = fixture(fx.name);
    let reference = read_json(&dir.join("reference.json"))?;
    for (i, input) in reference_inputs(&reference)?.iter().enumerate() {
        let (shape, want) = read_tensor_f32(
            &dir.join("reference.safetensors"),
            &format!("last_hidden_state.{i}"),
        )?;
        ensure!(
            shape == [input.ids.len(), fx.hidden],
            "reference shape {shape:?} for {} tokens",
            input.ids.len()
        );
        let got = hidden(input)?;
        assert_close(
            &format!("{}: last_hidden_state.{i}", fx.name),
            &got,
            &want,
            tol,
        );
    }
    Ok(())
}

/// The result of an input never depends on its batch: the fixture's sentences
/// embedded in several mixes (reversed, repeated, with a long input, in
/// pairs) match each sentence embedded alone within `tol`.
pub fn batch_invariance(
    factory: &dyn BackendFactory,
    device: Device,
    fx: &EncoderFixture,
    tol: f32,
) -> Result<()> {
    let dir = fixture(fx.name);
    let reference = read_json(&dir.join("reference.json"))?;
    let backend = load(factory, &dir, Task::Embed, device)?;
    let inputs = reference_inputs(&reference)?;
    let alone: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| {
            backend
                .embed(std::slice::from_ref(i))
                .map(|mut r| r.remove(0))
        })
        .collect::<Result<_, _>>()?;
    // A long input (the longest the model takes) pads every short one in its batch.
    let len = fx.max_positions.min(200);
    let long = EncodedInput::new(
        std::iter::once(fx.bos_eos.0)
            .chain((0..len as u32 - 2).map(|k| 1000 + (k * 37) % 20000))
            .chain(std::iter::once(fx.bos_eos.1))
            .collect(),
    );
    let long_alone = backend.embed(std::slice::from_ref(&long))?.remove(0);
    let mut mixes: Vec<Vec<usize>> = vec![
        (0..inputs.len()).rev().collect(),
        (0..inputs.len()).chain(0..inputs.len()).collect(),
    ];
    mixes.extend(
        (0..inputs.len())
            .step_by(2)
            .map(|i| vec![i, (i + 1) % inputs.len()]),
    );
    for mix in &mixes {
        let batch: Vec<EncodedInput> = mix.iter().map(|&i| inputs[i].clone()).collect();
        let rows = backend.embed(&batch)?;
        ensure!(
            rows.len() == batch.len(),
            "{} rows for {} inputs",
            rows.len(),
            batch.len()
        );
        for (&i, row) in mix.iter().zip(&rows) {
            assert_close(
                &format!("sentence {i} in batch {mix:?}"),
                row,
                &alone[i],
                tol,
            );
        }
    }
    let mut with_long = inputs.clone();
    with_long.insert(3, long);
    let rows = backend.embed(&with_long)?;
    for (k, row) in rows.iter().enumerate() {
        let want = match k {
            3 => &long_alone,
            k if k < 3 => &alone[k],
            k => &alone[k - 1],
        };
        assert_close(
            &format!("input {k} in a batch with a {len}-token input"),
            row,
            want,
            tol,
        );
    }
    ensure!(
        backend.embed(&[])?.is_empty(),
        "embedding no input gives rows"
    );
    Ok(())
}

/// The cross-encoder fixture's every (query, document) pair's raw logit within
/// `tol` of `logits`, with the reference's token_type_ids; its sigmoid within 1e-6
/// of `scores_sigmoid`; per query and with all pairs in one call.
pub fn cross_encoder_parity(
    factory: &dyn BackendFactory,
    device: Device,
    fx: &CrossEncoderFixture,
    tol: f32,
) -> Result<()> {
    let dir = fixture(fx.name);
    let reference = read_json(&dir.join("reference.json"))?;
    let backend = load(factory, &dir, Task::Rerank, device)?;
    let info = backend.info();
    ensure!(info.task == Task::Rerank, "info().task is {:?}", info.task);
    ensure!(
        info.output_dim == 1,
        "info().output_dim is {}, expected 1 label",
        info.output_dim
    );
    ensure!(
        info.max_positions == fx.max_positions,
        "{}: info().max_positions is {}, expected {}",
        fx.name,
        info.max_positions,
        fx.max_positions
    );
    let queries = reference["queries"].as_array().context("no queries")?;
    let mut all_pairs = Vec::new();
    let mut all_logits = Vec::new();
    for (qi, q) in queries.iter().enumerate() {
        let docs = q["documents"].as_array().context("no documents")?;
        let pairs: Vec<EncodedInput> = reference_pairs(q)?
            .into_iter()
            .zip(docs)
            .map(|(mut pair, doc)| {
                if let Some(sep) = fx.empty_document_sep
                    && doc.as_str() == Some("")
                    && !pair.type_ids.contains(&1)
                {
                    pair.ids.push(sep);
                    pair.type_ids.push(1);
                }
                pair
            })
            .collect();
        let want = json_f32s(&q["logits"]);
        let want_scores = json_f32s(&q["scores_sigmoid"]);
        let rows = backend.rerank(&pairs)?;
        ensure!(
            rows.len() == pairs.len(),
            "query {qi}: {} rows for {} pairs",
            rows.len(),
            pairs.len()
        );
        ensure!(
            rows.iter().all(|r| r.len() == 1),
            "query {qi}: rows are not one logit each"
        );
        let got: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        assert_close(&format!("{}: query {qi} logits", fx.name), &got, &want, tol);
        let scores: Vec<f32> = got.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
        assert_close(
            &format!("{}: query {qi} sigmoid scores", fx.name),
            &scores,
            &want_scores,
            1e-6f32.max(tol / 4.0),
        );
        all_pairs.extend(pairs);
        all_logits.extend(want);
    }
    let rows = backend.rerank(&all_pairs)?;
    let got: Vec<f32> = rows.iter().map(|r| r[0]).collect();
    assert_close(
        &format!("{}: all pairs in one call", fx.name),
        &got,
        &all_logits,
        tol,
    );
    Ok(())
}

/// The real all-MiniLM-L6-v2 (fetched by `fetch-real-models.sh`): every
/// embedding within `tol` of `all-MiniLM-L6-v2.reference.json` and the cosine
/// matrix within `tol` of its `cosine`.
pub fn minilm_parity(factory: &dyn BackendFactory, device: Device, tol: f32) -> Result<()> {
    let dir = real_model("all-MiniLM-L6-v2");
    let reference = read_json(&fixture("all-MiniLM-L6-v2.reference.json"))?;
    let backend = load(factory, &dir, Task::Embed, device)?;
    ensure!(
        backend.info().output_dim == 384,
        "output_dim {}",
        backend.info().output_dim
    );
    let inputs = reference_inputs(&reference)?;
    let want = reference_rows(&reference, "embeddings")?;
    let rows = check_embeddings(&*backend, "all-MiniLM-L6-v2", &inputs, &want, tol)?;
    let cos = reference_rows(&reference, "cosine")?;
    for (i, want_row) in cos.iter().enumerate() {
        let got: Vec<f32> = rows.iter().map(|r| cosine(&rows[i], r)).collect();
        assert_close(
            &format!("all-MiniLM-L6-v2: cosine row {i}"),
            &got,
            want_row,
            tol,
        );
    }
    Ok(())
}

/// With option `quantize = "int8"` (an approximation, so compared by cosine): every
/// embedding of the model in `dir` has cosine ≥ `min_cosine` to `reference.json`'s
/// f32 row, the cosine-similarity matrix of the rows (when the reference has one) is
/// within `matrix_tol` of its `cosine`, and the rows are not the f32 ones (int8
/// really ran).
pub fn int8_parity(
    factory: &dyn BackendFactory,
    device: Device,
    dir: &Path,
    reference: &Path,
    min_cosine: f32,
    matrix_tol: f32,
) -> Result<()> {
    let reference = read_json(reference)?;
    let mut spec = spec(dir, Task::Embed);
    spec.options.insert("quantize".into(), "int8".into());
    let backend = factory
        .load(&spec, device)
        .map_err(|e| anyhow::anyhow!("{} int8 on {device}: {e}", dir.display()))?;
    let inputs = reference_inputs(&reference)?;
    let want = reference_rows(&reference, "embeddings")?;
    let rows = backend.embed(&inputs)?;
    ensure!(rows.len() == want.len(), "{} rows", rows.len());
    let mut furthest = 0f32;
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        let c = cosine(got, want);
        ensure!(
            c >= min_cosine,
            "{}: sentence {i}: int8 cosine {c} < {min_cosine}",
            dir.display()
        );
        let d = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        furthest = furthest.max(d);
    }
    ensure!(
        furthest > 1e-5,
        "{}: int8 rows equal the f32 reference within {furthest}: was it quantized?",
        dir.display()
    );
    if reference.get("cosine").is_some() {
        for (i, want_row) in reference_rows(&reference, "cosine")?.iter().enumerate() {
            let got: Vec<f32> = rows.iter().map(|r| cosine(&rows[i], r)).collect();
            assert_close(
                &format!("{} int8: cosine row {i}", dir.display()),
                &got,
                want_row,
                matrix_tol,
            );
        }
    }
    Ok(())
}

/// Per-token hidden states of one input, computed by a model loaded for one fixture.
pub type HiddenOf = Box<dyn Fn(&EncodedInput) -> Result<Vec<f32>>>;

/// The tolerances of [`encoder_suite`] on one device.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Embeddings and cross-encoder logits against the references.
    pub outputs: f32,
    /// Last hidden states against the references.
    pub hidden: f32,
    /// A row in a batch against the same input alone.
    pub batch: f32,
}

/// Every check above for every encoder fixture ([`TINY_BERT`], [`TINY_ROBERTA`];
/// [`TINY_CROSS_ENCODER`], [`TINY_XLM_ROBERTA_RERANKER`]) on `device`: embeddings,
/// hidden states (through `hidden`, which loads a fixture's directory), batch
/// invariance and cross-encoder logits.
pub fn encoder_suite(
    factory: &dyn BackendFactory,
    device: Device,
    tol: Tolerances,
    hidden: impl Fn(&Path) -> Result<HiddenOf>,
) -> Result<()> {
    for fx in [&TINY_BERT, &TINY_ROBERTA] {
        embed_parity(factory, device, fx, tol.outputs)?;
        let of = hidden(&fixture(fx.name))?;
        hidden_states(fx, of, tol.hidden)?;
        batch_invariance(factory, device, fx, tol.batch)?;
    }
    for fx in [&TINY_CROSS_ENCODER, &TINY_XLM_ROBERTA_RERANKER] {
        cross_encoder_parity(factory, device, fx, tol.outputs)?;
    }
    Ok(())
}
