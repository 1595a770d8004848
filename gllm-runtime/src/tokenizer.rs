//! Text ↔ token ids, with the `tokenizers` crate built pure-Rust (fancy-regex).
//!
//! Loaded from a model's `tokenizer.json`, or rebuilt from the `tokenizer.ggml.*`
//! metadata of a GGUF file the way transformers converts it. Padding is left to
//! the backends (dynamic, per batch); truncation is applied here, to the model's
//! maximum length, and is never an error.

use std::path::Path;

use gllm_api::EncodedInput;
use serde_json::{Value, json};
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::gguf_meta::{GgufMetadata, MetaValue};

/// A tokenizer failure, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

type Result<T> = std::result::Result<T, TokenizerError>;

/// Bytes of text per token of a truncation limit that are tokenized at most: what lies
/// beyond would be truncated anyway (no tokenizer makes tokens this long on average).
pub const BYTES_PER_TOKEN_CAP: usize = 256;

/// `text` cut at a character boundary to [`BYTES_PER_TOKEN_CAP`] bytes per token of
/// `max_tokens`: what lies beyond would be truncated away after tokenizing anyway.
pub fn capped_for(text: &str, max_tokens: usize) -> &str {
    let cap = max_tokens.saturating_mul(BYTES_PER_TOKEN_CAP);
    if text.len() <= cap {
        return text;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A tokenizer with its truncation limit.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: Option<usize>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl TextTokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| TokenizerError(format!("cannot load {}: {e}", path.display())))?;
        Ok(Self::wrap(inner))
    }

    /// Parses `tokenizer.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        let inner = Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| TokenizerError(format!("invalid tokenizer JSON: {e}")))?;
        Ok(Self::wrap(inner))
    }

    /// Rebuilds the tokenizer that transformers builds from a GGUF file's
    /// `tokenizer.ggml.*` metadata (byte-level BPE, `gpt2` tokenizer model).
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self> {
        Self::from_json(&gguf_tokenizer_json(meta)?.to_string())
    }

    fn wrap(mut inner: Tokenizer) -> Self {
        // Padding is the backend's job (dynamic, per batch); a fixed padding or
        // truncation saved in tokenizer.json must not apply.
        inner.with_padding(None);
        let _ = inner.with_truncation(None);
        Self {
            inner,
            max_length: None,
        }
    }

    /// Truncates every later encoding to `max_length` tokens (special tokens included).
    pub fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| TokenizerError(format!("cannot truncate to {max_length}: {e}")))?;
        self.max_length = Some(max_length);
        Ok(())
    }

    /// The truncation limit, if any.
    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    /// Encodes one text. `add_special_tokens` adds what the tokenizer's post-processor adds ([CLS]/[SEP], BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<EncodedInput> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError(format!("cannot encode text: {e}")))?;
        Ok(EncodedInput {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    /// Encodes a (first, second) pair with the tokenizer's own pair template, truncating the longer first.
    /// An empty `second` is still a (empty) second segment, as in the batched pair
    /// encoding of sentence-transformers' `CrossEncoder.predict`: `[CLS] a [SEP] [SEP]`.
    /// Over-long texts are cut before tokenizing, as [`Self::encode_pairs`] says.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<EncodedInput> {
        self.encode_pairs(first, std::slice::from_ref(&second.to_string()))?
            .pop()
            .ok_or_else(|| TokenizerError("no encoding for one pair".into()))
    }

    /// The pair encodings of `first` with each of `seconds`, `first` tokenized
    /// once (as `Tokenizer::encode` of a pair does: its sequences are tokenized apart,
    /// then truncated and joined by the pair template). With a truncation limit, texts are first cut to
    /// [`BYTES_PER_TOKEN_CAP`] bytes per token of it, so a huge text costs no more than
    /// a long one.
    pub fn encode_pairs(&self, first: &str, seconds: &[String]) -> Result<Vec<EncodedInput>> {
        let err = |e: tokenizers::Error| TokenizerError(format!("cannot encode pair: {e}"));
        let a = self.inner.encode(self.capped(first), false).map_err(err)?;
        seconds
            .iter()
            .map(|second| {
                let b = self.inner.encode(self.capped(second), false).map_err(err)?;
                let enc = self
                    .inner
                    .post_process(a.clone(), Some(b), true)
                    .map_err(err)?;
                Ok(EncodedInput {
                    ids: enc.get_ids().to_vec(),
                    type_ids: enc.get_type_ids().to_vec(),
                })
            })
            .collect()
    }

    /// `text` cut to [`BYTES_PER_TOKEN_CAP`] bytes per token of the truncation limit
    /// ([`capped_for`]); all of it without a limit.
    pub fn capped<'a>(&self, text: &'a str) -> &'a str {
        match self.max_length {
            Some(max) => capped_for(text, max),
            None => text,
        }
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError(format!("cannot decode: {e}")))
    }

    /// The id of a token string (added/special tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as `tokenizer.json` text.
    pub(crate) fn to_json(&self) -> std::result::Result<String, String> {
        self.inner
            .to_string(false)
            .map_err(|e| format!("cannot write the tokenizer as JSON: {e}"))
    }
}

/// Builds the tokenizer.json that transformers' GGUF converter produces for a
/// byte-level BPE (`tokenizer.ggml.model = "gpt2"`) vocabulary: Qwen2's split
/// regex and NFC for the `qwen2` pre-tokenizer, GPT-2's byte-level regex otherwise.
fn gguf_tokenizer_json(meta: &GgufMetadata) -> Result<Value> {
    let model = meta.str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(TokenizerError(format!(
            "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); give a tokenizer.json with `tokenizer = ...` in the manifest"
        )));
    }
    let tokens = meta
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .ok_or_else(|| TokenizerError("GGUF has no tokenizer.ggml.tokens".into()))?;
    let types: Vec<u64> = meta
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let merges: Vec<Value> = meta
        .get("tokenizer.ggml.merges")
        .and_then(MetaValue::as_array)
        .ok_or_else(|| TokenizerError("GGUF has no tokenizer.ggml.merges".into()))?
        .iter()
        .filter_map(|m| m.as_str())
        .map(|m| Value::String(m.to_string()))
        .collect();

    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let tok = tok
            .as_str()
            .ok_or_else(|| TokenizerError(format!("GGUF token {id} is not a string")))?;
        // Every token keeps its id in the BPE vocabulary; 3 = control and
        // 4 = user-defined are also added tokens, matched before the BPE model.
        vocab.insert(tok.to_string(), json!(id));
        let ty = types.get(id).copied().unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3,
            }));
        }
    }

    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let pre = meta.str("tokenizer.ggml.pre").unwrap_or("");
    let arch = meta.architecture().unwrap_or("");
    let (normalizer, pre_tokenizer, post_processor) = if pre.starts_with("qwen") || arch == "qwen2"
    {
        (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
            byte_level(false),
        )
    } else {
        let bos = meta
            .get("tokenizer.ggml.add_bos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(false)
            .then(|| meta.u64("tokenizer.ggml.bos_token_id"))
            .flatten()
            .and_then(|id| tokens.get(id as usize))
            .and_then(MetaValue::as_str);
        let post = match bos {
            Some(b) => json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b: {"id": b, "ids": [meta.u64("tokenizer.ggml.bos_token_id")], "tokens": [b]}}}),
            None => json!({"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {}}),
        };
        (Value::Null, byte_level(true), post)
    };

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": "", "end_of_word_suffix": "",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// Qwen2's pre-tokenizer split pattern (as in its tokenizer.json).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
