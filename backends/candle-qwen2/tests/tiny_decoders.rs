//! tiny-qwen2 and tiny-qwen3 (safetensors, bf16 weights computed in f32) against the
//! transformers references: the shared generation conformance suite plus
//! backend-specific checks.

use anyhow::Result;
use candle_qwen2::{FACTORY, Qwen2Backend};
use gllm_api::{BackendFactory, Device, InferenceBackend};
use gllm_testkit::generate::{self, DecoderFixture, TINY_QWEN2, TINY_QWEN3};
use gllm_testkit::read_tensor_f32;

fn load(fx: DecoderFixture) -> Result<Qwen2Backend> {
    Ok(candle_qwen2::load(&fx.spec(), Device::CPU)?)
}

fn backend() -> Result<Qwen2Backend> {
    load(TINY_QWEN2)
}

#[test]
fn registered_with_inventory() {
    let names: Vec<&str> = gllm_api::registered_factories().map(|f| f.name()).collect();
    assert!(names.contains(&"candle-qwen2"), "registered: {names:?}");
}

#[test]
fn qwen2_conformance_suite_through_the_factory() -> Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU, TINY_QWEN2)
}

#[test]
fn qwen3_conformance_suite_through_the_factory() -> Result<()> {
    generate::run_all_for(&FACTORY, Device::CPU, TINY_QWEN3)
}

/// The CPU computes over plain rows; other devices take candle's tensor ops. That path
/// runs here on the CPU (option `cpu_tensor_ops`) through the same suite.
#[test]
fn tensor_ops_path_passes_the_conformance_suite() -> Result<()> {
    for fx in [TINY_QWEN2, TINY_QWEN3] {
        let mut spec = fx.spec();
        spec.options.insert("cpu_tensor_ops".into(), "true".into());
        let b = candle_qwen2::load(&spec, Device::CPU)?;
        anyhow::ensure!(b.model().tensor_ops, "option not applied");
        generate::run_all(&b, fx)?;
    }
    Ok(())
}

/// An f16 KV cache (option `kv_cache`) rounds keys and values, nothing else.
#[test]
fn f16_kv_cache_passes_the_conformance_suite() -> Result<()> {
    for fx in [TINY_QWEN2, TINY_QWEN3] {
        let mut spec = fx.spec();
        spec.options.insert("kv_cache".into(), "f16".into());
        let b = candle_qwen2::load(&spec, Device::CPU)?;
        anyhow::ensure!(b.model().kv_f16, "option not applied");
        generate::run_all_within(&b, fx, generate::F16_KV_LOGITS_TOL)?;
    }
    Ok(())
}

#[test]
fn kv_cache_option_values_are_checked() -> Result<()> {
    let load_with = |opts: &[(&str, &str)]| {
        let mut spec = TINY_QWEN2.spec();
        for (k, v) in opts {
            spec.options.insert(k.to_string(), v.to_string());
        }
        candle_qwen2::load(&spec, Device::CPU)
    };
    let err = load_with(&[("kv_cache", "f8")]).expect_err("f8 is no cache type");
    anyhow::ensure!(
        err.to_string()
            .contains("`kv_cache` must be `f32` or `f16`, not `f8`"),
        "{err}"
    );
    let err = load_with(&[("kv_cache", "f16"), ("cpu_tensor_ops", "true")])
        .expect_err("the tensor path keeps an f32 cache");
    anyhow::ensure!(err.to_string().contains("`kv_cache` = `f16`"), "{err}");
    anyhow::ensure!(!load_with(&[("kv_cache", "f32")])?.model().kv_f16);
    Ok(())
}

#[test]
fn final_hidden_within_1e_4() -> Result<()> {
    for fx in [TINY_QWEN2, TINY_QWEN3] {
        let b = load(fx)?;
        generate::check_final_hidden(fx, &|ids| {
            let mut cache = b.new_cache()?;
            let rows = b.hidden_states(cache.as_mut(), ids)?;
            anyhow::ensure!(cache.len() == ids.len(), "cache holds {}", cache.len());
            anyhow::ensure!(rows.iter().all(|r| r.len() == b.config().hidden_size));
            Ok(rows.concat())
        })?;
    }
    Ok(())
}

#[test]
fn qwen3_is_read_with_its_head_width_and_head_norms() -> Result<()> {
    let b = load(TINY_QWEN3)?;
    let cfg = b.config();
    assert_eq!(cfg.architecture, candle_qwen2::Architecture::Qwen3);
    assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.hidden_size), (16, 64, 32));
    assert!(cfg.qk_norm && !cfg.attention_bias);
    assert!(
        b.model()
            .layers
            .iter()
            .all(|l| l.q_norm.is_some() && l.k_norm.is_some())
    );
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
    let mut spec = TINY_QWEN2.spec();
    spec.dtype = Some(gllm_api::DType::Bf16);
    let b = FACTORY.load(&spec, Device::CPU)?;
    assert_eq!(b.info().dtype, gllm_api::DType::Bf16);
    generate::check_greedy(b.as_ref(), TINY_QWEN2)
}

#[test]
fn f16_request_is_close() -> Result<()> {
    let mut spec = TINY_QWEN2.spec();
    spec.dtype = Some(gllm_api::DType::F16);
    let b = FACTORY.load(&spec, Device::CPU)?;
    let refs = TINY_QWEN2.tensors();
    let c = &TINY_QWEN2.cases()?[0];
    let (_, want) = read_tensor_f32(&refs, "logits_last.0")?;
    let mut cache = b.new_cache()?;
    let got = b.forward(cache.as_mut(), &c.input_ids)?;
    assert!(gllm_testkit::cosine(&got, &want) > 0.999);
    Ok(())
}

#[test]
fn many_threads_share_one_model() -> Result<()> {
    let b = backend()?;
    let cases = TINY_QWEN2.cases()?;
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
