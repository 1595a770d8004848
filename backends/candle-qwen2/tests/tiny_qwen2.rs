//! tiny-qwen2 (safetensors, bf16 weights computed in f32) against the transformers
//! references: the shared generation conformance suite plus backend-specific checks.

use anyhow::Result;
use candle_qwen2::{FACTORY, Qwen2Backend};
use gllm_api::{BackendFactory, Device, InferenceBackend};
use gllm_testkit::generate::{self, tiny_qwen2_dir, tiny_qwen2_spec};
use gllm_testkit::{assert_close, read_tensor_f32};

fn backend() -> Result<Qwen2Backend> {
    Ok(candle_qwen2::load(&tiny_qwen2_spec(), Device::CPU)?)
}

#[test]
fn registered_with_inventory() {
    let names: Vec<&str> = gllm_api::registered_factories().map(|f| f.name()).collect();
    assert!(names.contains(&"candle-qwen2"), "registered: {names:?}");
}

#[test]
fn conformance_suite_through_the_factory() -> Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU)
}

#[test]
fn greedy_24_tokens() -> Result<()> {
    generate::check_greedy(&backend()?)
}

#[test]
fn logits_last_within_1e_3() -> Result<()> {
    generate::check_logits_last(&backend()?)
}

#[test]
fn final_hidden_within_1e_4() -> Result<()> {
    let b = backend()?;
    let refs = tiny_qwen2_dir().join("reference.safetensors");
    for (i, c) in generate::cases()?.iter().enumerate() {
        let (shape, want) = read_tensor_f32(&refs, &format!("final_hidden.{i}"))?;
        let mut cache = b.new_cache()?;
        let rows = b.hidden_states(cache.as_mut(), &c.input_ids)?;
        assert_eq!(shape, vec![c.input_ids.len(), b.config().hidden_size]);
        assert_eq!(cache.len(), c.input_ids.len());
        let got: Vec<f32> = rows.concat();
        assert_close(&format!("final_hidden.{i}"), &got, &want, 1e-4);
    }
    Ok(())
}

#[test]
fn info_describes_the_model() -> Result<()> {
    let b = backend()?;
    let info = b.info();
    assert_eq!(info.vocab_size, 151936);
    assert_eq!(info.output_dim, 151936);
    assert_eq!(info.max_positions, 32768);
    assert_eq!(info.dtype, gllm_api::DType::F32);
    Ok(())
}

#[test]
fn caches_of_another_model_are_refused() -> Result<()> {
    let a = backend()?;
    let b = backend()?;
    let mut cache = a.new_cache()?;
    let err = b.forward(cache.as_mut(), &[1, 2]).err();
    assert_eq!(err.map(|e| e.kind), Some(gllm_api::ErrorKind::InvalidInput));
    Ok(())
}

#[test]
fn bf16_request_keeps_greedy_tokens() -> Result<()> {
    // bf16 weights stay bf16 whatever the request: a bf16 request is the same model.
    let mut spec = tiny_qwen2_spec();
    spec.dtype = Some(gllm_api::DType::Bf16);
    let b = FACTORY.load(&spec, Device::CPU)?;
    assert_eq!(b.info().dtype, gllm_api::DType::Bf16);
    generate::check_greedy(b.as_ref())
}

#[test]
fn f16_request_is_close() -> Result<()> {
    let mut spec = tiny_qwen2_spec();
    spec.dtype = Some(gllm_api::DType::F16);
    let b = FACTORY.load(&spec, Device::CPU)?;
    let refs = tiny_qwen2_dir().join("reference.safetensors");
    let c = &generate::cases()?[0];
    let (_, want) = read_tensor_f32(&refs, "logits_last.0")?;
    let mut cache = b.new_cache()?;
    let got = b.forward(cache.as_mut(), &c.input_ids)?;
    assert!(gllm_testkit::cosine(&got, &want) > 0.999);
    Ok(())
}

#[test]
fn many_threads_share_one_model() -> Result<()> {
    let b = backend()?;
    let cases = generate::cases()?;
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| s.spawn(|| generate::greedy(&b, &c.input_ids, 24)))
            .collect();
        for (h, c) in handles.into_iter().zip(&cases) {
            let got = h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
            anyhow::ensure!(got == c.greedy_new_ids, "threaded greedy {got:?}");
        }
        Ok(())
    })
}
