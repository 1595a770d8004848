//! GGUF files: tiny-qwen2 and tiny-qwen3 converted by llama.cpp (f16, and Q8_0 for
//! qwen2) and the real SmolLM2-135M-Instruct Q4_1 (Llama architecture).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use candle_qwen2::{FACTORY, RopeStyle};
use gllm_api::{BackendFactory, Device, InferenceBackend, ModelSpec, Task, WeightFormat};
use gllm_testkit::generate::{self, TINY_QWEN2, TINY_QWEN3, argmax, greedy};
use gllm_testkit::{cosine, fixture, json_u32s, read_json, read_tensor_f32, real_model};

fn spec(path: &Path, arch: &str, options: &[(&str, &str)]) -> ModelSpec {
    ModelSpec {
        id: "gguf-test".into(),
        task: Task::Generate,
        path: path.to_path_buf(),
        format: WeightFormat::Gguf,
        architecture: arch.into(),
        dtype: None,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn load(path: &Path, arch: &str, options: &[(&str, &str)]) -> Result<Box<dyn InferenceBackend>> {
    Ok(FACTORY.load(&spec(path, arch, options), Device::CPU)?)
}

#[test]
fn f16_gguf_gives_the_safetensors_greedy_tokens() -> Result<()> {
    let b = load(&fixture("gguf/tiny-qwen2-f16.gguf"), "qwen2", &[])?;
    generate::check_greedy(b.as_ref(), TINY_QWEN2)?;
    generate::check_logits_last(b.as_ref(), TINY_QWEN2)
}

#[test]
fn f16_gguf_passes_the_conformance_suite() -> Result<()> {
    let b = load(&fixture("gguf/tiny-qwen2-f16.gguf"), "qwen2", &[])?;
    generate::run_all(b.as_ref(), TINY_QWEN2)
}

/// llama.cpp's conversion of tiny-qwen3 (`attn_q_norm`/`attn_k_norm`, key_length 16):
/// the safetensors references, and llama.cpp's own greedy ids on the same file.
#[test]
fn qwen3_f16_gguf_passes_the_conformance_suite_and_matches_llama_cpp() -> Result<()> {
    let path = fixture("gguf/tiny-qwen3-f16.gguf");
    let b = load(&path, "qwen3", &[])?;
    generate::run_all(b.as_ref(), TINY_QWEN3)?;
    let llama = read_json(&fixture("gguf/reference.json"))?;
    let llama_cases = llama["tiny-qwen3-f16.gguf"]["cases"]
        .as_array()
        .context("tiny-qwen3-f16.gguf cases")?;
    let cases = TINY_QWEN3.cases()?;
    ensure!(llama_cases.len() == cases.len(), "case counts differ");
    for (c, lc) in cases.iter().zip(llama_cases) {
        let want = json_u32s(&lc["greedy_new_ids"]);
        ensure!(!want.is_empty(), "llama.cpp case without greedy ids");
        let got = greedy(b.as_ref(), &c.input_ids, want.len())?;
        ensure!(got == want, "{:?}: {got:?} != llama.cpp {want:?}", c.prompt);
    }
    Ok(())
}

#[test]
fn q8_0_gguf_logits_and_first_tokens() -> Result<()> {
    let b = load(&fixture("gguf/tiny-qwen2-q8_0.gguf"), "qwen2", &[])?;
    let refs = fixture("tiny-qwen2/reference.safetensors");
    let llama = read_json(&fixture("gguf/reference.json"))?;
    let llama_cases = llama["tiny-qwen2-q8_0.gguf"]["cases"]
        .as_array()
        .context("q8_0 cases")?;
    for (i, c) in TINY_QWEN2.cases()?.iter().enumerate() {
        let (_, want) = read_tensor_f32(&refs, &format!("logits_last.{i}"))?;
        let mut cache = b.new_cache()?;
        let got = b.forward(cache.as_mut(), &c.input_ids)?;
        let cos = cosine(&got, &want);
        ensure!(cos >= 0.998, "case {i}: cosine {cos} < 0.998");
        let lc = &llama_cases[i];
        ensure!(
            json_u32s(&lc["input_ids"]) == c.input_ids,
            "case {i}: input ids differ"
        );
        if i <= 2 {
            let want_first = json_u32s(&lc["greedy_new_ids"])[0];
            ensure!(
                argmax(&got) == want_first,
                "case {i}: first greedy token {} != llama.cpp's {want_first}",
                argmax(&got)
            );
        }
    }
    Ok(())
}

struct SmolCase {
    name: String,
    input_ids: Vec<u32>,
    transformers: Vec<u32>,
    llama_cpp: Vec<u32>,
}

fn smollm2_cases() -> Result<Vec<SmolCase>> {
    let r = read_json(&fixture("smollm2-gguf.reference.json"))?;
    let llama = r["llama_cpp_greedy"]["cases"]
        .as_array()
        .context("llama_cpp_greedy")?;
    let mut out = Vec::new();
    for c in r["cases"].as_array().context("cases")? {
        let prompt = c["prompt"].as_str().unwrap_or_default();
        let lc = llama
            .iter()
            .find(|l| l["prompt"].as_str() == Some(prompt))
            .context("llama.cpp case")?;
        out.push(SmolCase {
            name: prompt.to_string(),
            input_ids: json_u32s(&c["input_ids"]),
            transformers: json_u32s(&c["greedy_new_ids"]),
            llama_cpp: json_u32s(&lc["greedy_new_ids"]),
        });
    }
    let chat = &r["chat"];
    let text = chat["text"].as_str().unwrap_or_default();
    let lc = llama
        .iter()
        .find(|l| l["prompt"].as_str() == Some(text))
        .context("llama.cpp chat case")?;
    out.push(SmolCase {
        name: "chat".into(),
        input_ids: json_u32s(&chat["input_ids"]),
        transformers: json_u32s(&chat["greedy_new_ids"]),
        llama_cpp: json_u32s(&lc["greedy_new_ids"]),
    });
    Ok(out)
}

fn smollm2() -> std::path::PathBuf {
    real_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn smollm2_q4_1_dequantized_matches_transformers() -> Result<()> {
    // transformers computes in float32 on the dequantized GGUF weights: so do we here.
    let b = load(&smollm2(), "llama", &[("dequantize", "true")])?;
    for c in smollm2_cases()? {
        let got = greedy(b.as_ref(), &c.input_ids, 3)?;
        ensure!(
            got == c.transformers[..3],
            "{}: {got:?} != transformers {:?}",
            c.name,
            &c.transformers[..3]
        );
    }
    Ok(())
}

#[test]
fn smollm2_q4_1_quantized_leading_tokens() -> Result<()> {
    // Quantized arithmetic (Q8_1 activations, as llama.cpp): the first 3 tokens of the two
    // text cases equal transformers' (float32 on the dequantized weights). The chat case
    // drifts into French under Q4_1 from its first token on, in llama.cpp and here alike:
    // there the first 3 tokens equal llama.cpp's.
    let b = load(&smollm2(), "llama", &[])?;
    let info = b.info();
    assert_eq!(info.vocab_size, 49152);
    for c in smollm2_cases()? {
        let got = greedy(b.as_ref(), &c.input_ids, 3)?;
        eprintln!(
            "{}: got {got:?}, llama.cpp {:?}, transformers {:?}",
            c.name,
            &c.llama_cpp[..3],
            &c.transformers[..3]
        );
        if c.name == "chat" {
            ensure!(got == c.llama_cpp[..3], "chat: {got:?} != llama.cpp");
        } else {
            ensure!(
                got == c.transformers[..3],
                "{}: {got:?} != transformers",
                c.name
            );
            ensure!(
                got[..2] == c.llama_cpp[..2],
                "{}: {got:?} vs llama.cpp",
                c.name
            );
        }
    }
    Ok(())
}

#[test]
fn smollm2_config_from_metadata() -> Result<()> {
    let b = candle_qwen2::load(&spec(&smollm2(), "llama", &[]), Device::CPU)?;
    let cfg = b.config();
    assert_eq!(cfg.architecture, candle_qwen2::Architecture::Llama);
    assert_eq!(cfg.rope_style, RopeStyle::Interleaved);
    assert!(!cfg.attention_bias);
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers), (576, 30));
    assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads), (9, 3));
    Ok(())
}

#[test]
fn tiny_gguf_config_from_metadata() -> Result<()> {
    let b = candle_qwen2::load(
        &spec(&fixture("gguf/tiny-qwen2-q8_0.gguf"), "qwen2", &[]),
        Device::CPU,
    )?;
    let cfg = b.config();
    assert_eq!(cfg.rope_style, RopeStyle::Halved);
    assert!(cfg.attention_bias && cfg.tie_word_embeddings);
    assert_eq!((cfg.hidden_size, cfg.vocab_size), (32, 151936));
    assert_eq!(cfg.rope_theta, 1e6);
    Ok(())
}

/// A copy of `src` whose tensor `name` claims GGML type `ty` (its info edited in place).
fn with_tensor_type(src: &Path, name: &str, ty: u32, tag: &str) -> Result<std::path::PathBuf> {
    let mut bytes = std::fs::read(src)?;
    // Tensor info: u64 name length, the name, u32 dims, dims × u64, u32 type, u64 offset.
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .context("tensor info not found")?
        + key.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
    let ty_at = at + 4 + 8 * dims;
    bytes[ty_at..ty_at + 4].copy_from_slice(&ty.to_le_bytes());
    let out = std::env::temp_dir().join(format!("gllm-gguf-{tag}-{}.gguf", std::process::id()));
    std::fs::write(&out, bytes)?;
    Ok(out)
}

#[test]
fn unknown_types_bad_widths_and_truncated_tensors_are_invalid_model_errors_naming_them()
-> Result<()> {
    let src = fixture("gguf/tiny-qwen2-q8_0.gguf");
    // Loads `path` (then removes it): an invalid-model error, whose message is returned.
    let invalid_model = |path: &Path, what: &str| -> Result<String> {
        let err = FACTORY
            .load(&spec(path, "qwen2", &[]), Device::CPU)
            .err()
            .with_context(|| format!("{what} loads"));
        let _ = std::fs::remove_file(path);
        let err = err?;
        let msg = err.to_string();
        ensure!(err.kind == gllm_api::ErrorKind::InvalidModel, "{msg}");
        Ok(msg)
    };
    // IQ4_NL (20): a block type gllm has no kernel for; Q4_K (12) on tiny-qwen2's
    // 32-wide rows, no whole 256-value super-block.
    for (ty, tag, type_name) in [(20, "iq4nl", "IQ4_NL"), (12, "q4k-width", "Q4K")] {
        let path = with_tensor_type(&src, "blk.1.attn_q.weight", ty, tag)?;
        let msg = invalid_model(&path, tag)?;
        ensure!(
            msg.contains("blk.1.attn_q.weight") && msg.contains(type_name),
            "{msg}"
        );
    }

    // Truncated tensor data: the last tensor's bytes are cut short.
    let bytes = std::fs::read(&src)?;
    let cut = std::env::temp_dir().join(format!("gllm-gguf-cut-{}.gguf", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() - 100])?;
    let msg = invalid_model(&cut, "a truncated file")?;
    ensure!(msg.contains("tensor `output_norm.weight` (F32)"), "{msg}");
    Ok(())
}

#[test]
fn an_alignment_of_zero_is_an_invalid_model_not_a_panic() -> Result<()> {
    // A `general.alignment = 0` key put first in the metadata (candle divides by it).
    let mut bytes = std::fs::read(fixture("gguf/tiny-qwen2-q8_0.gguf"))?;
    let kvs = u64::from_le_bytes(bytes[16..24].try_into()?);
    bytes[16..24].copy_from_slice(&(kvs + 1).to_le_bytes());
    let key = "general.alignment";
    let mut kv = (key.len() as u64).to_le_bytes().to_vec();
    kv.extend_from_slice(key.as_bytes());
    kv.extend_from_slice(&4u32.to_le_bytes());
    kv.extend_from_slice(&0u32.to_le_bytes());
    bytes.splice(24..24, kv);
    let path = std::env::temp_dir().join(format!("gllm-gguf-align0-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes)?;
    let err = FACTORY
        .load(&spec(&path, "qwen2", &[]), Device::CPU)
        .err()
        .context("alignment 0 loads")?;
    let _ = std::fs::remove_file(&path);
    let msg = err.to_string();
    ensure!(err.kind == gllm_api::ErrorKind::InvalidModel, "{msg}");
    ensure!(
        msg.contains("general.alignment is 0, not a power of two"),
        "{msg}"
    );
    Ok(())
}
