//! Constrained decoding with llguidance: a JSON Schema, any JSON object, or a Lark
//! grammar (the forced tool calls of [`crate::tool_calls::tool_call_grammar`]) limits
//! which tokens the sampler may pick at each step. The mask is applied in the
//! runtime's generation loop, so every backend and plugin gets it.
//!
//! The token table comes from the model's tokenizer (its `tokenizer.json`, or the one
//! rebuilt from GGUF metadata); it is built once per model, on first use.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::Value;

use crate::tokenizer::TextTokenizer;

/// What the output must follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON following this schema (`{"type": "json_schema", …}`).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark dialect.
    Lark(String),
}

/// Makes a schema's JSON compact (`{"a": 1, "b": [2, 3]}` with no free whitespace):
/// models then cannot pad an answer with endless blank lines.
pub(crate) fn compact_json(schema: &mut Value) {
    if let Value::Object(map) = schema {
        let options = JsonCompileOptions {
            whitespace_flexible: false,
            ..JsonCompileOptions::default()
        };
        if let Ok(v) = serde_json::to_value(options) {
            map.insert("x-guidance".into(), v);
        }
    }
}

impl Grammar {
    fn top_level(&self) -> Result<TopLevelGrammar, String> {
        Ok(match self {
            Grammar::JsonObject => {
                let mut s = serde_json::json!({"type": "object"});
                compact_json(&mut s);
                TopLevelGrammar::from_json_schema(s)
            }
            Grammar::JsonSchema(schema) => {
                let mut s = match schema {
                    Value::Object(_) => schema.clone(),
                    Value::Bool(true) => serde_json::json!({}),
                    _ => return Err("a JSON schema must be an object".into()),
                };
                compact_json(&mut s);
                TopLevelGrammar::from_json_schema(s)
            }
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        })
    }
}

/// The bytes of every token id of the model's vocabulary (empty for ids the
/// tokenizer does not have); special tokens start with llguidance's marker byte.
fn token_bytes(tokenizer: &TextTokenizer, vocab_size: usize) -> Result<Vec<Vec<u8>>, String> {
    let json: Value = serde_json::from_str(&tokenizer.to_json()?)
        .map_err(|e| format!("the tokenizer's JSON does not parse: {e}"))?;
    let mut words = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
        .map_err(|_| "the token table cannot be built from this tokenizer".to_string())?
        .map_err(|e| format!("the token table cannot be built from this tokenizer: {e}"))?;
    words.resize(vocab_size, Vec::new());
    Ok(words)
}

struct TokenizerAdapter {
    trie: TokTrie,
    tokenizer: TextTokenizer,
}

impl TokenizerEnv for TokenizerAdapter {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tokenizer
            .encode(&String::from_utf8_lossy(s), false)
            .map(|e| e.ids)
            .unwrap_or_default()
    }
}

/// A model's token table and grammar compiler (one per model, shared by its requests).
pub(crate) struct GrammarEnv {
    factory: ParserFactory,
    eos_ids: Vec<u32>,
}

impl std::fmt::Debug for GrammarEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarEnv")
            .field(
                "vocab_size",
                &self.factory.tok_env().tok_trie().vocab_size(),
            )
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl GrammarEnv {
    pub fn new(
        tokenizer: &TextTokenizer,
        vocab_size: usize,
        eos_ids: &[u32],
    ) -> Result<Self, String> {
        let words = token_bytes(tokenizer, vocab_size)?;
        let eos = *eos_ids
            .first()
            .ok_or("the model has no end-of-sequence token to end a constrained answer")?;
        let mut info = TokRxInfo::new(vocab_size as u32, eos);
        info.tok_end_of_turn = eos_ids.get(1).copied();
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(TokenizerAdapter {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| format!("cannot set up constrained decoding: {e}"))?;
        factory.quiet();
        Ok(Self {
            factory,
            eos_ids: eos_ids.to_vec(),
        })
    }

    /// The raw bytes of a token (a special token's text without the marker).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let trie = self.factory.tok_env().tok_trie();
        if (id as usize) >= trie.vocab_size() {
            return Vec::new();
        }
        let b = trie.token(id);
        b.strip_prefix(&[TokTrie::SPECIAL_TOKEN_MARKER])
            .unwrap_or(b)
            .to_vec()
    }

    /// A fresh matcher for one answer; a grammar or schema llguidance refuses is an
    /// error naming what it refused.
    pub fn constraint(self: &Arc<Self>, grammar: &Grammar) -> Result<Constraint, String> {
        let parser = self
            .factory
            .create_parser(grammar.top_level()?)
            .map_err(|e| format!("{e}"))?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            env: self.clone(),
        })
    }
}

/// The state of one constrained answer.
pub(crate) struct Constraint {
    matcher: Matcher,
    env: Arc<GrammarEnv>,
}

impl Constraint {
    /// Sets every token the grammar does not allow next to -inf (the EOS ids are
    /// allowed when the grammar may end here).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| format!("constrained decoding failed: {e}"))?;
        let eos_ok = self.env.eos_ids.iter().any(|&e| mask.is_allowed(e));
        for (i, l) in logits.iter_mut().enumerate() {
            let allowed = (i < mask.len() && mask.get(i))
                || (eos_ok && self.env.eos_ids.contains(&(i as u32)));
            if !allowed {
                *l = f32::NEG_INFINITY;
            }
        }
        if logits.iter().all(|l| *l == f32::NEG_INFINITY) {
            return Err("constrained decoding allows no token here".into());
        }
        Ok(())
    }

    /// Advances past the token picked; `true` once the grammar is complete and allows
    /// nothing more.
    pub fn consume(&mut self, token: u32) -> Result<bool, String> {
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("constrained decoding failed: {e}"))?;
        Ok(self.matcher.is_stopped())
    }
}
