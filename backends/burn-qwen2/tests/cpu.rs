//! The generation conformance suite and the reference hidden states on the CPU
//! (`flex`), for tiny-qwen2 and tiny-qwen3.

use burn_qwen2::{BurnQwen2, FACTORY};
use gllm_api::Device;
use gllm_testkit::generate::{self, TINY_QWEN2, TINY_QWEN3};
use gllm_testkit::{assert_close, read_tensor_f32};

fn model() -> anyhow::Result<BurnQwen2> {
    Ok(BurnQwen2::load_dir(&TINY_QWEN2.dir(), Device::CPU)?)
}

#[test]
fn final_hidden_matches_reference() -> anyhow::Result<()> {
    for fx in [TINY_QWEN2, TINY_QWEN3] {
        let model = BurnQwen2::load_dir(&fx.dir(), Device::CPU)?;
        generate::check_final_hidden(fx, &|ids| Ok(model.final_hidden(ids)?))?;
    }
    Ok(())
}

#[test]
fn qwen2_conformance_suite() -> anyhow::Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU, TINY_QWEN2)
}

#[test]
fn qwen3_conformance_suite() -> anyhow::Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU, TINY_QWEN3)
}

#[test]
fn cache_grows_in_chunks_across_boundaries() -> anyhow::Result<()> {
    use burn_qwen2::Qwen2Cache;
    use gllm_api::InferenceBackend;
    let model = model()?;
    let c = &TINY_QWEN2.cases()?[0];
    // 600 positions: crosses the first chunk (256) and the next growth.
    let seq: Vec<u32> = c.input_ids.iter().copied().cycle().take(600).collect();
    let mut fresh = model.new_cache()?;
    let full = model.forward(fresh.as_mut(), &seq)?;

    let mut cache = model.new_cache()?;
    let capacity = |cache: &mut Box<dyn gllm_api::KvCache>| {
        gllm_api::downcast_cache::<Qwen2Cache>(cache.as_mut()).map(|c| c.capacity())
    };
    assert_eq!(capacity(&mut cache)?, 0, "a new cache allocates nothing");
    model.forward(cache.as_mut(), &seq[..200])?;
    assert_eq!(capacity(&mut cache)?, 256);
    for &t in &seq[200..300] {
        model.forward(cache.as_mut(), &[t])?;
    }
    let grown = capacity(&mut cache)?;
    assert!((300..32768).contains(&grown), "capacity {grown}");
    let last = model.forward(cache.as_mut(), &seq[300..])?;
    assert_eq!(cache.len(), 600);
    assert_close("600 positions, chunked vs one prefill", &last, &full, 1e-4);
    Ok(())
}

#[test]
fn a_cache_of_another_model_is_refused() -> anyhow::Result<()> {
    use gllm_api::{ErrorKind, InferenceBackend};
    let (a, b) = (model()?, model()?);
    let mut cache = a.new_cache()?;
    let e = b
        .forward(cache.as_mut(), &[1, 2, 3])
        .expect_err("foreign cache accepted");
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    Ok(())
}

fn load_dtype(dtype: gllm_api::DType) -> anyhow::Result<BurnQwen2> {
    let mut spec = TINY_QWEN2.spec();
    spec.dtype = Some(dtype);
    Ok(BurnQwen2::load(&spec, Device::CPU)?)
}

#[test]
fn bf16_requests_compute_exactly_in_f32() -> anyhow::Result<()> {
    use gllm_api::{DType, InferenceBackend};
    let model = load_dtype(DType::Bf16)?;
    assert_eq!(model.info().dtype, DType::F32);
    generate::check_logits_last(&model, TINY_QWEN2)?;
    generate::check_greedy(&model, TINY_QWEN2)
}

#[test]
fn f16_compute_stays_close() -> anyhow::Result<()> {
    use gllm_api::{DType, InferenceBackend};
    let model = load_dtype(DType::F16)?;
    assert_eq!(model.info().dtype, DType::F16);
    let refs = TINY_QWEN2.tensors();
    for (i, c) in TINY_QWEN2.cases()?.iter().enumerate() {
        let (_, want) = read_tensor_f32(&refs, &format!("logits_last.{i}"))?;
        let mut cache = model.new_cache()?;
        let got = model.forward(cache.as_mut(), &c.input_ids)?;
        // f16 keeps 11 significant bits: a few hundredths on logits of size ~1.
        assert_close(&format!("f16 logits_last.{i}"), &got, &want, 0.1);
        let cos = gllm_testkit::cosine(&got, &want);
        assert!(cos > 0.999, "case {i}: cosine {cos}");
    }
    Ok(())
}

#[test]
fn forward_batch_equals_each_alone() -> anyhow::Result<()> {
    use gllm_api::{InferenceBackend, KvCache};
    let model = model()?;
    let cases = TINY_QWEN2.cases()?;
    let mut batch: Vec<Box<dyn KvCache>> = Vec::new();
    let mut alone: Vec<Box<dyn KvCache>> = Vec::new();
    for _ in &cases {
        batch.push(model.new_cache()?);
        alone.push(model.new_cache()?);
    }
    // Step 0: prompts of different lengths together; then decode steps, plus a
    // two-token step for one sequence, all in one batch.
    let mut feeds: Vec<Vec<u32>> = cases.iter().map(|c| c.input_ids.clone()).collect();
    for step in 0..6 {
        let mut steps: Vec<(&mut dyn KvCache, &[u32])> = batch
            .iter_mut()
            .zip(&feeds)
            .map(|(c, t)| (c.as_mut(), t.as_slice()))
            .collect();
        let got = model.forward_batch(&mut steps)?;
        for (i, (cache, feed)) in alone.iter_mut().zip(&feeds).enumerate() {
            let want = model.forward(cache.as_mut(), feed)?;
            assert_close(&format!("step {step}, sequence {i}"), &got[i], &want, 1e-4);
            assert_eq!(batch[i].len(), cache.len());
        }
        for (i, f) in feeds.iter_mut().enumerate() {
            let next = generate::argmax(&got[i]);
            *f = if i == 0 && step == 2 {
                vec![next, 7]
            } else {
                vec![next]
            };
        }
    }
    Ok(())
}
