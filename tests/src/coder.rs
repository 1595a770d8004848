//! The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Qwen's own GGUF) and its reference
//! continuations (`qwen2.5-coder-0.5b-gguf.reference.json`): the cases, and the one
//! agreement rule every test of it applies.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};

use crate::{fixtures_dir, json_u32s, read_json, real_model};

/// The GGUF file (fetched by `scripts/fetch-models.sh`).
pub fn coder_gguf() -> PathBuf {
    real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

/// The reference file, parsed.
pub fn coder_reference() -> Result<serde_json::Value> {
    read_json(&fixtures_dir().join("qwen2.5-coder-0.5b-gguf.reference.json"))
}

/// One case: a raw prompt, a chat, or a chat with tools.
#[derive(Debug, Clone)]
pub struct CoderCase {
    /// `prompts[i]`, `chats[i]` or `tools[i]`.
    pub name: String,
    /// The case's JSON (prompt or messages, tools, input_ids, ...).
    pub json: serde_json::Value,
    /// The prompt's token ids.
    pub input_ids: Vec<u32>,
    /// llama.cpp's greedy continuation (on the quantized weights).
    pub llama_cpp: Vec<u32>,
    /// transformers' greedy continuation (on the dequantized weights).
    pub transformers: Vec<u32>,
    /// How many leading tokens those two share.
    pub agree_tokens: usize,
}

/// The cases of section `section` (`prompts`, `chats` or `tools`).
pub fn coder_cases(section: &str) -> Result<Vec<CoderCase>> {
    let r = coder_reference()?;
    let cases = r[section]
        .as_array()
        .with_context(|| format!("reference has no `{section}`"))?;
    ensure!(!cases.is_empty(), "reference `{section}` is empty");
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(CoderCase {
                name: format!("{section}[{i}]"),
                json: c.clone(),
                input_ids: json_u32s(&c["input_ids"]),
                llama_cpp: json_u32s(&c["llama_cpp"]["greedy_new_ids"]),
                transformers: json_u32s(&c["transformers"]["greedy_new_ids"]),
                agree_tokens: c["agree_tokens"].as_u64().context("agree_tokens")? as usize,
            })
        })
        .collect()
}

/// The model's end-of-sequence ids, from the reference.
pub fn coder_eos() -> Result<Vec<u32>> {
    Ok(json_u32s(&coder_reference()?["eos_token_ids"]))
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl CoderCase {
    /// How many new tokens to generate: the longer reference continuation.
    pub fn max_tokens(&self) -> usize {
        self.llama_cpp.len().max(self.transformers.len())
    }

    /// Checks `ours` (greedy new tokens, EOS not included) against the references: it
    /// must share at least as many leading tokens with llama.cpp's or transformers'
    /// continuation as those two share with each other, EOS aside (a reference that
    /// ends in EOS is matched by ours ending there).
    pub fn check(&self, ours: &[u32], eos: &[u32]) -> Result<()> {
        let strip = |v: &[u32]| -> Vec<u32> {
            v.iter().copied().take_while(|t| !eos.contains(t)).collect()
        };
        let (llama, tf) = (strip(&self.llama_cpp), strip(&self.transformers));
        let need = |r: &[u32]| self.agree_tokens.min(r.len());
        let (with_llama, with_tf) = (common_prefix(ours, &llama), common_prefix(ours, &tf));
        ensure!(
            with_llama >= need(&llama) || with_tf >= need(&tf),
            "{}: ours share {with_llama} leading tokens with llama.cpp and {with_tf} with transformers, \
             which share {} with each other\n  ours:         {ours:?}\n  llama.cpp:    {llama:?}\n  transformers: {tf:?}",
            self.name,
            self.agree_tokens
        );
        Ok(())
    }
}
