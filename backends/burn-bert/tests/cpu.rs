//! Parity with the sentence-transformers references on the CPU (Burn `flex`).

use burn_bert::{BurnBert, FACTORY};
use gllm_api::{Device, Task};
use gllm_testkit::embed::{self, HiddenOf, Tolerances};
use gllm_testkit::fixture;

#[test]
fn registered_under_its_name() {
    let names: Vec<&str> = gllm_api::registered_factories().map(|f| f.name()).collect();
    assert!(names.contains(&"burn-bert"), "registered: {names:?}");
}

/// The shared suite on every encoder fixture (BERT, RoBERTa, both cross-encoders).
#[test]
fn conformance_suite() -> anyhow::Result<()> {
    let tol = Tolerances {
        outputs: 1e-5,
        hidden: 1e-4,
        batch: 1e-6,
    };
    embed::encoder_suite(&FACTORY, Device::CPU, tol, |dir| {
        let model = BurnBert::load_dir(dir, Task::Embed, Device::CPU)?;
        let of: HiddenOf = Box::new(move |input| Ok(model.last_hidden_state(input)?));
        Ok(of)
    })
}

#[test]
fn all_minilm_l6_v2() -> anyhow::Result<()> {
    embed::minilm_parity(&FACTORY, Device::CPU, 1e-5)
}

/// int8 (an approximation): cosine ≥ 0.999 to the f32 reference for every sentence,
/// the cosine-similarity matrix within 0.01.
#[test]
fn int8_all_minilm_l6_v2() -> anyhow::Result<()> {
    embed::int8_parity(
        &FACTORY,
        Device::CPU,
        &gllm_testkit::real_model("all-MiniLM-L6-v2"),
        &fixture("all-MiniLM-L6-v2.reference.json"),
        0.999,
        0.01,
    )
}

#[test]
fn int8_tiny_bert() -> anyhow::Result<()> {
    embed::int8_parity(
        &FACTORY,
        Device::CPU,
        &fixture("tiny-bert"),
        &fixture("tiny-bert").join("reference.json"),
        0.999,
        0.01,
    )
}

#[test]
fn int8_cross_encoder_logits_stay_close() -> anyhow::Result<()> {
    // Logits of tiny-cross-encoder's first query with int8 encoder layers.
    use gllm_testkit::{json_f32s, read_json};
    let dir = fixture("tiny-cross-encoder");
    let reference = read_json(&dir.join("reference.json"))?;
    let q = &reference["queries"][0];
    let pairs = embed::reference_pairs(q)?;
    let mut spec = embed::spec(&dir, Task::Rerank);
    spec.options.insert("quantize".into(), "int8".into());
    let model = BurnBert::load(&spec, Device::CPU)?;
    let got: Vec<f32> = gllm_api::InferenceBackend::rerank(&model, &pairs)?
        .iter()
        .map(|r| r[0])
        .collect();
    let want = json_f32s(&q["logits"]);
    for (g, w) in got.iter().zip(&want) {
        anyhow::ensure!(
            (g - w).abs() < 0.05 * w.abs().max(1.0),
            "int8 logit {g} vs {w}"
        );
    }
    anyhow::ensure!(got != want, "int8 logits equal the f32 ones");
    Ok(())
}

/// The generic path (padded batches, Burn ops only: the one GPUs run) on the CPU.
#[test]
fn unfused_path_matches_the_references() -> anyhow::Result<()> {
    use gllm_testkit::{json_f32s, read_json};
    let dir = fixture("tiny-bert");
    let mut spec = embed::spec(&dir, Task::Embed);
    spec.options.insert("fused".into(), "false".into());
    let model = BurnBert::load(&spec, Device::CPU)?;
    let reference = read_json(&dir.join("reference.json"))?;
    let inputs = embed::reference_inputs(&reference)?;
    let want = embed::reference_rows(&reference, "embeddings")?;
    embed::check_embeddings(&model, "tiny-bert (unfused)", &inputs, &want, 1e-5)?;

    let dir = fixture("tiny-cross-encoder");
    let mut spec = embed::spec(&dir, Task::Rerank);
    spec.options.insert("fused".into(), "false".into());
    let model = BurnBert::load(&spec, Device::CPU)?;
    let reference = read_json(&dir.join("reference.json"))?;
    let q = &reference["queries"][0];
    let pairs = embed::reference_pairs(q)?;
    let got: Vec<f32> = gllm_api::InferenceBackend::rerank(&model, &pairs)?
        .iter()
        .map(|r| r[0])
        .collect();
    gllm_testkit::assert_close(
        "tiny-cross-encoder (unfused)",
        &got,
        &json_f32s(&q["logits"]),
        1e-5,
    );
    Ok(())
}

#[test]
fn int8_is_refused_where_it_cannot_run() {
    let dir = fixture("tiny-xlm-roberta-reranker");
    let mut spec = embed::spec(&dir, Task::Rerank);
    spec.options.insert("quantize".into(), "int8".into());
    let Err(e) = BurnBert::load(&spec, Device::CPU) else {
        panic!("a 16-wide model loaded in int8");
    };
    assert_eq!(e.kind, gllm_api::ErrorKind::Unsupported, "{e}");
    assert!(
        e.message.contains("is 16 wide, not a multiple of 32"),
        "{e}"
    );

    spec.options.insert("quantize".into(), "int4".into());
    let Err(e) = BurnBert::load(&spec, Device::CPU) else {
        panic!("quantize = int4 loaded");
    };
    assert_eq!(e.kind, gllm_api::ErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains("`int4` is not `int8`"), "{e}");
}
