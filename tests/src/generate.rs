//! The generation conformance suite: every `generate` backend runs these same checks on
//! each decoder fixture it serves ([`TINY_QWEN2`], [`TINY_QWEN3`]: reference numbers
//! from transformers, float32 on the bf16 weights).
//!
//! Call [`run_all`] with a loaded backend, or [`run_all_for`] with a factory and device
//! (it loads the fixture itself). Each check is public too, for finer-grained tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use gllm_api::{
    BackendFactory, Device, ErrorKind, InferenceBackend, KvCache, ModelSpec, Task, WeightFormat,
};

use crate::{assert_close, fixture, json_u32s, read_json, read_tensor_f32};

/// Greedy tokens each reference case holds.
pub const GREEDY_TOKENS: usize = 24;
/// Tolerance on last-position logits against the float32 reference.
pub const LOGITS_TOL: f32 = 1e-3;
/// Tolerance on last-position logits against the float32 reference for a backend whose
/// KV cache holds f16: every cached key and value rounded to 11 bits.
pub const F16_KV_LOGITS_TOL: f32 = 3e-2;
/// Tolerance on final hidden states against the float32 reference.
pub const HIDDEN_TOL: f32 = 1e-4;
/// Tolerance between two ways of computing the same logits in one backend.
pub const SELF_TOL: f32 = 1e-4;

/// One case of a decoder fixture's `reference.json`.
#[derive(Debug, Clone)]
pub struct Case {
    /// The prompt text.
    pub prompt: String,
    /// Its token ids.
    pub input_ids: Vec<u32>,
    /// The 24 greedy new token ids.
    pub greedy_new_ids: Vec<u32>,
}

/// A decoder fixture whose references are in tiny-qwen2's format (`reference.json`
/// cases of 24 greedy tokens, `batched_greedy_8`; `reference.safetensors` with
/// `logits_last.<i>` and `final_hidden.<i>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderFixture {
    /// The fixture directory's name.
    pub name: &'static str,
    /// Its `model_type`.
    pub architecture: &'static str,
}

/// `tiny-qwen2`: Qwen2 with qkv biases.
pub const TINY_QWEN2: DecoderFixture = DecoderFixture {
    name: "tiny-qwen2",
    architecture: "qwen2",
};

/// `tiny-qwen3`: Qwen3, head width 16 (not hidden / heads), RMSNorm per head on q and k.
pub const TINY_QWEN3: DecoderFixture = DecoderFixture {
    name: "tiny-qwen3",
    architecture: "qwen3",
};

impl DecoderFixture {
    /// The model directory.
    pub fn dir(&self) -> PathBuf {
        fixture(self.name)
    }

    /// A spec loading it (safetensors, f32 compute).
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            id: self.name.into(),
            task: Task::Generate,
            path: self.dir(),
            format: WeightFormat::Safetensors,
            architecture: self.architecture.into(),
            dtype: None,
            options: BTreeMap::new(),
        }
    }

    /// `reference.safetensors`.
    pub fn tensors(&self) -> PathBuf {
        self.dir().join("reference.safetensors")
    }

    /// The reference cases.
    pub fn cases(&self) -> Result<Vec<Case>> {
        let r = read_json(&self.dir().join("reference.json"))?;
        let cases = r["cases"]
            .as_array()
            .context("reference.json has no cases")?;
        let out: Vec<Case> = cases
            .iter()
            .map(|c| Case {
                prompt: c["prompt"].as_str().unwrap_or_default().to_string(),
                input_ids: json_u32s(&c["input_ids"]),
                greedy_new_ids: json_u32s(&c["greedy_new_ids"]),
            })
            .collect();
        ensure!(
            !out.is_empty(),
            "{}: reference.json has no cases",
            self.name
        );
        for c in &out {
            ensure!(
                !c.input_ids.is_empty() && c.greedy_new_ids.len() == GREEDY_TOKENS,
                "{}: malformed case {:?}",
                self.name,
                c.prompt
            );
        }
        Ok(out)
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Seconds of one prefill of `prompt_tokens` deterministic ordinary token ids and of
/// `decode_tokens` greedy one-token steps after it, llama-bench style (after a short
/// warm-up on the same cache, emptied again). `at_decode` runs just before the decode
/// steps (to start other clocks there). For the backends' bench examples.
pub fn time_prefill_decode(
    backend: &dyn InferenceBackend,
    prompt_tokens: usize,
    decode_tokens: usize,
    at_decode: &mut dyn FnMut(),
) -> Result<(f64, f64)> {
    let vocab = backend.info().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab.min(30000))
        .collect();
    let mut cache = backend.new_cache()?;
    // First touch of the weights and the thread pools.
    backend.forward(cache.as_mut(), &prompt[..8.min(prompt.len())])?;
    cache.truncate(0)?;
    let t = std::time::Instant::now();
    let mut logits = backend.forward(cache.as_mut(), &prompt)?;
    let prefill_s = t.elapsed().as_secs_f64();
    at_decode();
    let t = std::time::Instant::now();
    for _ in 0..decode_tokens {
        let next = argmax(&logits);
        logits = backend.forward(cache.as_mut(), &[next])?;
    }
    Ok((prefill_s, t.elapsed().as_secs_f64()))
}

/// Greedy decoding: prefill `prompt`, then feed each chosen token; `n` new tokens.
pub fn greedy(backend: &dyn InferenceBackend, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut cache = backend.new_cache()?;
    let mut logits = backend.forward(cache.as_mut(), prompt)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = argmax(&logits);
        out.push(t);
        if i + 1 < n {
            logits = backend.forward(cache.as_mut(), &[t])?;
        }
    }
    Ok(out)
}

/// The 24 greedy tokens of every case equal the reference.
pub fn check_greedy(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    for (i, c) in fx.cases()?.iter().enumerate() {
        let got = greedy(backend, &c.input_ids, GREEDY_TOKENS)?;
        ensure!(
            got == c.greedy_new_ids,
            "case {i} ({:?}): greedy ids {got:?} != reference {:?}",
            c.prompt,
            c.greedy_new_ids
        );
    }
    Ok(())
}

/// Last-position logits of every case within [`LOGITS_TOL`] of `logits_last.<i>`.
pub fn check_logits_last(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    check_logits_last_within(backend, fx, LOGITS_TOL)
}

/// Last-position logits of every case within `tol` of `logits_last.<i>`.
pub fn check_logits_last_within(
    backend: &dyn InferenceBackend,
    fx: DecoderFixture,
    tol: f32,
) -> Result<()> {
    let refs = fx.tensors();
    for (i, c) in fx.cases()?.iter().enumerate() {
        let (_, want) = read_tensor_f32(&refs, &format!("logits_last.{i}"))?;
        let mut cache = backend.new_cache()?;
        let got = backend.forward(cache.as_mut(), &c.input_ids)?;
        ensure!(
            got.len() == backend.info().output_dim,
            "logits length {} != output_dim {}",
            got.len(),
            backend.info().output_dim
        );
        assert_close(&format!("logits_last.{i}"), &got, &want, tol);
    }
    Ok(())
}

/// Decoding token by token gives the same logits (within [`SELF_TOL`]) as one prefill of
/// the whole sequence, at every step of case 0 and at the end of every case.
pub fn check_incremental_equals_prefill(
    backend: &dyn InferenceBackend,
    fx: DecoderFixture,
) -> Result<()> {
    for (i, c) in fx.cases()?.iter().enumerate() {
        let mut seq = c.input_ids.clone();
        seq.extend_from_slice(&c.greedy_new_ids[..GREEDY_TOKENS - 1]);
        let mut cache = backend.new_cache()?;
        let mut step = backend.forward(cache.as_mut(), &c.input_ids)?;
        for (j, &t) in c.greedy_new_ids[..GREEDY_TOKENS - 1].iter().enumerate() {
            step = backend.forward(cache.as_mut(), &[t])?;
            let pos = c.input_ids.len() + j + 1;
            ensure!(cache.len() == pos, "cache len {} != {pos}", cache.len());
            if i == 0 {
                let mut fresh = backend.new_cache()?;
                let full = backend.forward(fresh.as_mut(), &seq[..pos])?;
                assert_close(
                    &format!("case {i}: decode step {j} vs prefill of {pos} tokens"),
                    &step,
                    &full,
                    SELF_TOL,
                );
            }
        }
        let mut fresh = backend.new_cache()?;
        let full = backend.forward(fresh.as_mut(), &seq)?;
        assert_close(
            &format!("case {i}: token-by-token vs one prefill"),
            &step,
            &full,
            SELF_TOL,
        );
    }
    Ok(())
}

/// Prefill in uneven chunks at non-zero cache offsets equals one prefill.
pub fn check_chunked_prefill(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    for (i, c) in fx.cases()?.iter().enumerate() {
        let mut seq = c.input_ids.clone();
        seq.extend_from_slice(&c.greedy_new_ids[..12]);
        let mut fresh = backend.new_cache()?;
        let full = backend.forward(fresh.as_mut(), &seq)?;
        let mut cache = backend.new_cache()?;
        let mut last = Vec::new();
        for chunk in [&seq[..3], &seq[3..10], &seq[10..]] {
            last = backend.forward(cache.as_mut(), chunk)?;
        }
        assert_close(
            &format!("case {i}: chunked prefill"),
            &last,
            &full,
            SELF_TOL,
        );
    }
    Ok(())
}

/// Two (and more) sequences decoded interleaved on one model equal each alone.
pub fn check_interleaved(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    let cases = fx.cases()?;
    let mut caches: Vec<Box<dyn KvCache>> = Vec::new();
    let mut next: Vec<u32> = Vec::new();
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); cases.len()];
    for c in &cases {
        let mut cache = backend.new_cache()?;
        let logits = backend.forward(cache.as_mut(), &c.input_ids)?;
        caches.push(cache);
        next.push(argmax(&logits));
    }
    for _ in 0..GREEDY_TOKENS {
        for (i, cache) in caches.iter_mut().enumerate() {
            got[i].push(next[i]);
            let logits = backend.forward(cache.as_mut(), &[next[i]])?;
            next[i] = argmax(&logits);
        }
    }
    for (i, c) in cases.iter().enumerate() {
        ensure!(
            got[i] == c.greedy_new_ids,
            "interleaved case {i}: {:?} != alone {:?}",
            got[i],
            c.greedy_new_ids
        );
    }
    Ok(())
}

/// `batched_greedy_8`: the prompts decoded together through `forward_batch` give the
/// reference's 8 tokens each (the same as each prompt alone).
pub fn check_batched_greedy_8(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    let r = read_json(&fx.dir().join("reference.json"))?;
    let b = &r["batched_greedy_8"];
    let prompts = b["prompts"]
        .as_array()
        .context("batched_greedy_8.prompts")?;
    let want: Vec<Vec<u32>> = b["new_ids"]
        .as_array()
        .context("batched_greedy_8.new_ids")?
        .iter()
        .map(json_u32s)
        .collect();
    let cases = fx.cases()?;
    let mut inputs = Vec::new();
    for p in prompts {
        let p = p.as_str().context("prompt is not a string")?;
        let c = cases
            .iter()
            .find(|c| c.prompt == p)
            .with_context(|| format!("batched prompt {p:?} is not a reference case"))?;
        inputs.push(c.input_ids.clone());
    }
    ensure!(
        inputs.len() == want.len(),
        "prompts and new_ids differ in length"
    );
    let mut caches: Vec<Box<dyn KvCache>> = inputs
        .iter()
        .map(|_| backend.new_cache())
        .collect::<Result<_, _>>()?;
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); inputs.len()];
    let mut feed: Vec<Vec<u32>> = inputs.clone();
    for _ in 0..8 {
        let mut steps: Vec<(&mut dyn KvCache, &[u32])> = caches
            .iter_mut()
            .zip(&feed)
            .map(|(c, t)| (c.as_mut(), t.as_slice()))
            .collect();
        let logits = backend.forward_batch(&mut steps)?;
        ensure!(
            logits.len() == inputs.len(),
            "forward_batch returned {} rows",
            logits.len()
        );
        for (i, l) in logits.iter().enumerate() {
            let t = argmax(l);
            got[i].push(t);
            feed[i] = vec![t];
        }
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        ensure!(g == w, "batched_greedy_8 prompt {i}: {g:?} != {w:?}");
    }
    Ok(())
}

/// One `forward_batch` over sequences in different states (a fresh prompt, a decode
/// step after a prompt, a chunk appended mid-sequence) gives each sequence the logits
/// (within [`SELF_TOL`]) that `forward` gives it alone, and leaves each cache as long.
pub fn check_batch_equals_alone(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    let cases = fx.cases()?;
    ensure!(cases.len() >= 3, "need three reference cases");
    // (tokens already in the cache, tokens this step appends)
    let plans: Vec<(Vec<u32>, Vec<u32>)> = vec![
        (Vec::new(), cases[0].input_ids.clone()),
        (
            cases[1].input_ids.clone(),
            cases[1].greedy_new_ids[..1].to_vec(),
        ),
        (
            cases[2].input_ids.clone(),
            cases[2].greedy_new_ids[..5].to_vec(),
        ),
    ];
    let mut alone = Vec::new();
    let mut batch_caches: Vec<Box<dyn KvCache>> = Vec::new();
    for (before, step) in &plans {
        let mut cache = backend.new_cache()?;
        let mut other = backend.new_cache()?;
        if !before.is_empty() {
            backend.forward(cache.as_mut(), before)?;
            backend.forward(other.as_mut(), before)?;
        }
        alone.push(backend.forward(cache.as_mut(), step)?);
        batch_caches.push(other);
    }
    let mut steps: Vec<(&mut dyn KvCache, &[u32])> = batch_caches
        .iter_mut()
        .zip(&plans)
        .map(|(c, (_, step))| (c.as_mut(), step.as_slice()))
        .collect();
    let together = backend.forward_batch(&mut steps)?;
    ensure!(
        together.len() == plans.len(),
        "forward_batch returned {} rows",
        together.len()
    );
    for (i, ((got, want), (before, step))) in together.iter().zip(&alone).zip(&plans).enumerate() {
        assert_close(&format!("sequence {i} in the batch"), got, want, SELF_TOL);
        ensure!(
            batch_caches[i].len() == before.len() + step.len(),
            "sequence {i}: cache holds {} positions, expected {}",
            batch_caches[i].len(),
            before.len() + step.len()
        );
    }
    Ok(())
}

/// Truncating a cache and re-feeding gives the same logits and tokens; truncating
/// beyond the length is invalid input.
pub fn check_truncate_refeed(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    for (i, c) in fx.cases()?.iter().enumerate() {
        let mut seq = c.input_ids.clone();
        seq.extend_from_slice(&c.greedy_new_ids[..8]);
        let mut cache = backend.new_cache()?;
        let first = backend.forward(cache.as_mut(), &seq)?;
        ensure!(cache.len() == seq.len(), "cache len after prefill");

        // Roll back to the prompt and re-feed the generated part.
        cache.truncate(c.input_ids.len())?;
        ensure!(cache.len() == c.input_ids.len(), "cache len after truncate");
        let again = backend.forward(cache.as_mut(), &c.greedy_new_ids[..8])?;
        assert_close(
            &format!("case {i}: truncate + re-feed"),
            &again,
            &first,
            SELF_TOL,
        );

        // Reuse a prefix with a different continuation, then go back.
        cache.truncate(c.input_ids.len())?;
        let other = backend.forward(cache.as_mut(), &[c.greedy_new_ids[5]])?;
        let mut fresh = backend.new_cache()?;
        let mut other_seq = c.input_ids.clone();
        other_seq.push(c.greedy_new_ids[5]);
        let want_other = backend.forward(fresh.as_mut(), &other_seq)?;
        assert_close(
            &format!("case {i}: prefix reuse"),
            &other,
            &want_other,
            SELF_TOL,
        );

        // Greedy continuation after a rollback equals the reference.
        cache.truncate(c.input_ids.len() - 1)?;
        let mut logits = backend.forward(cache.as_mut(), &c.input_ids[c.input_ids.len() - 1..])?;
        let mut toks = Vec::new();
        for _ in 0..GREEDY_TOKENS {
            let t = argmax(&logits);
            toks.push(t);
            logits = backend.forward(cache.as_mut(), &[t])?;
        }
        ensure!(
            toks == c.greedy_new_ids,
            "case {i}: greedy after truncate {toks:?}"
        );

        // Everything forgotten: like a new cache.
        cache.truncate(0)?;
        ensure!(cache.is_empty(), "cache not empty after truncate(0)");
        let restart = backend.forward(cache.as_mut(), &c.input_ids)?;
        let mut fresh = backend.new_cache()?;
        let want = backend.forward(fresh.as_mut(), &c.input_ids)?;
        assert_close(
            &format!("case {i}: truncate(0) + prefill"),
            &restart,
            &want,
            SELF_TOL,
        );

        match cache.truncate(cache.len() + 1) {
            Err(e) if e.kind == ErrorKind::InvalidInput => {}
            other => bail!("truncate beyond the length gave {other:?}, want invalid input"),
        }
    }
    Ok(())
}

/// A copy of a cache ([`KvCache::try_clone`], used by the runtime's prompt cache)
/// continues exactly as the original would, and the two share nothing: feeding one
/// leaves the other as it was. A backend may answer `Unsupported` instead (it then
/// gets no prompt cache); any other error fails.
pub fn check_cache_copy(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    for (i, c) in fx.cases()?.iter().enumerate() {
        let mut cache = backend.new_cache()?;
        backend.forward(cache.as_mut(), &c.input_ids)?;
        let mut copy = match cache.try_clone() {
            Ok(copy) => copy,
            Err(e) if e.kind == ErrorKind::Unsupported => return Ok(()),
            Err(e) => bail!("try_clone failed: {e}"),
        };
        ensure!(copy.len() == cache.len(), "case {i}: copy len");
        ensure!(
            cache.bytes() > 0 && copy.bytes() > 0,
            "case {i}: a copyable cache reports its bytes"
        );
        // The copy goes one way, the original another; each equals a fresh prefill.
        let (a, b) = (c.greedy_new_ids[0], c.greedy_new_ids[3]);
        let from_copy = backend.forward(copy.as_mut(), &[a, b])?;
        let from_original = backend.forward(cache.as_mut(), &[b])?;
        for (name, got, tail) in [
            ("copy", &from_copy, vec![a, b]),
            ("original", &from_original, vec![b]),
        ] {
            let mut seq = c.input_ids.clone();
            seq.extend(&tail);
            let mut fresh = backend.new_cache()?;
            let want = backend.forward(fresh.as_mut(), &seq)?;
            assert_close(
                &format!("case {i}: {name} after the copy"),
                got,
                &want,
                SELF_TOL,
            );
        }
    }
    Ok(())
}

/// Out-of-vocabulary ids and empty input are invalid input, and leave the cache usable.
pub fn check_invalid_input(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    let vocab = backend.info().vocab_size as u32;
    let mut cache = backend.new_cache()?;
    match backend.forward(cache.as_mut(), &[1, vocab]) {
        Err(e) if e.kind == ErrorKind::InvalidInput => {}
        other => bail!(
            "token id {vocab} (= vocab size) gave {:?}",
            other.map(|l| l.len())
        ),
    }
    match backend.forward(cache.as_mut(), &[]) {
        Err(e) if e.kind == ErrorKind::InvalidInput => {}
        other => bail!("empty input gave {:?}", other.map(|l| l.len())),
    }
    ensure!(cache.is_empty(), "a refused forward changed the cache");
    let c = &fx.cases()?[0];
    let got = greedy(backend, &c.input_ids, 4)?;
    ensure!(
        got == c.greedy_new_ids[..4],
        "backend broken after invalid input"
    );
    Ok(())
}

/// The final hidden states (after the final RMSNorm) of every case's prompt, as
/// `hidden(prompt)` computes them (row-major `[tokens, hidden]`, on a fresh cache),
/// within [`HIDDEN_TOL`] of `final_hidden.<i>`.
pub fn check_final_hidden(
    fx: DecoderFixture,
    hidden: &dyn Fn(&[u32]) -> Result<Vec<f32>>,
) -> Result<()> {
    let refs = fx.tensors();
    for (i, c) in fx.cases()?.iter().enumerate() {
        let (shape, want) = read_tensor_f32(&refs, &format!("final_hidden.{i}"))?;
        ensure!(
            shape.first() == Some(&c.input_ids.len()),
            "final_hidden.{i} has shape {shape:?}"
        );
        let got = hidden(&c.input_ids)?;
        assert_close(
            &format!("{} final_hidden.{i}", fx.name),
            &got,
            &want,
            HIDDEN_TOL,
        );
    }
    Ok(())
}

/// Every check of the suite, on a loaded decoder fixture.
pub fn run_all(backend: &dyn InferenceBackend, fx: DecoderFixture) -> Result<()> {
    run_all_within(backend, fx, LOGITS_TOL)
}

/// [`run_all`] with the last-position logits within `logits_tol` of the reference (a
/// backend configured to round, as with an f16 KV cache, [`F16_KV_LOGITS_TOL`]); the
/// greedy tokens and the checks of the backend against itself are as strict.
pub fn run_all_within(
    backend: &dyn InferenceBackend,
    fx: DecoderFixture,
    logits_tol: f32,
) -> Result<()> {
    let info = backend.info();
    ensure!(info.task == Task::Generate, "task is {:?}", info.task);
    ensure!(info.vocab_size == 151936, "vocab_size {}", info.vocab_size);
    check_greedy(backend, fx).context("greedy")?;
    check_logits_last_within(backend, fx, logits_tol).context("logits_last")?;
    check_incremental_equals_prefill(backend, fx).context("incremental decode")?;
    check_chunked_prefill(backend, fx).context("chunked prefill")?;
    check_interleaved(backend, fx).context("interleaved sequences")?;
    check_batched_greedy_8(backend, fx).context("batched_greedy_8")?;
    check_batch_equals_alone(backend, fx).context("forward_batch equals each alone")?;
    check_truncate_refeed(backend, fx).context("truncate + re-feed")?;
    check_cache_copy(backend, fx).context("cache copy")?;
    check_invalid_input(backend, fx).context("invalid input")?;
    Ok(())
}

/// Loads the fixture `fx` with `factory` on `device` and runs [`run_all`].
pub fn run_all_for(factory: &dyn BackendFactory, device: Device, fx: DecoderFixture) -> Result<()> {
    let spec = fx.spec();
    if let Some(why) = factory.capabilities().mismatch(&spec, device) {
        bail!(
            "{} cannot load {} on {device}: {why}",
            factory.name(),
            fx.name
        );
    }
    let backend = factory
        .load(&spec, device)
        .with_context(|| format!("{} loading {}", factory.name(), fx.name))?;
    run_all(backend.as_ref(), fx).with_context(|| format!("{} on {device}", fx.name))
}
