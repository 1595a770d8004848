//! From a manifest entry to files on disk: the weights, their format and
//! architecture, and the text side (tokenizer, chat template, generation
//! defaults, rerank activation, input length limit). `hf = "org/name"` entries
//! are found in (and, with the `download` feature, fetched into) the Hugging
//! Face cache by [`crate::hub`].

use std::path::{Path, PathBuf};

use gllm_api::{ModelSpec, Task, WeightFormat};
use serde_json::Value;

use crate::chat_template::ChatTemplate;
use crate::decoder_rerank::DecoderRerank;
use crate::error::{Result, RuntimeError};
use crate::gguf_meta::{GgufMetadata, MetaValue};
use crate::grammar::GrammarEnv;
use crate::manifest::{ModelEntry, ModelSource};
use crate::sampling::SamplingParams;
use crate::tokenizer::TextTokenizer;

/// The resolved files of one model.
#[derive(Debug, Clone)]
pub(crate) struct ModelFiles {
    /// What the backends get.
    pub spec: ModelSpec,
    /// The directory holding side files (the GGUF file's directory for GGUF).
    pub dir: PathBuf,
    /// `config.json`, or `Null`.
    pub config: Value,
    /// GGUF metadata for GGUF weights.
    pub gguf: Option<GgufMetadata>,
}

/// How a cross-encoder's logit becomes a score (sentence-transformers' CrossEncoder rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// 1 / (1 + e^-x): the default for one label.
    Sigmoid,
    /// The logit itself.
    Identity,
    /// tanh(x).
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Identity => x,
            Self::Tanh => x.tanh(),
        }
    }
}

/// Everything on the text side of a model.
#[derive(Debug)]
pub(crate) struct TextSide {
    pub tokenizer: TextTokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Sampling defaults from generation_config.json.
    pub defaults: SamplingParams,
    pub activation: Activation,
    /// Set when a causal LM reranks (its prompt and answer tokens).
    pub decoder_rerank: Option<DecoderRerank>,
    /// Embedding prompts by name (`config_sentence_transformers.json`), prepended to
    /// each text, and the one used when a request names none.
    pub prompts: Prompts,
    /// The token table and grammar compiler for constrained decoding and token bytes,
    /// built on first use (an error says why this tokenizer cannot have one).
    pub grammar: std::sync::OnceLock<std::result::Result<std::sync::Arc<GrammarEnv>, String>>,
}

/// The named prompts of a sentence-transformers embedder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    /// Name to prompt text.
    pub by_name: std::collections::BTreeMap<String, String>,
    /// `default_prompt_name`, if set.
    pub default: Option<String>,
}

impl Prompts {
    fn read(id: &str, dir: &Path) -> Result<Self> {
        let Some(cfg) = read_json_opt(id, &dir.join("config_sentence_transformers.json"))? else {
            return Ok(Self::default());
        };
        let by_name = cfg
            .get("prompts")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                v.as_str()
                    .map(|t| (k.clone(), t.to_string()))
                    .ok_or_else(|| {
                        files_err(
                            id,
                            format!(
                                "config_sentence_transformers.json: prompt `{k}` is not a string"
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?;
        let default = cfg
            .get("default_prompt_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self { by_name, default })
    }

    /// The text to prepend for a request naming `name` (or none: the default
    /// prompt, else nothing). An unknown name is an invalid request listing the names.
    pub fn text(&self, name: Option<&str>) -> Result<&str> {
        match name.or(self.default.as_deref()) {
            None => Ok(""),
            Some(n) => self.by_name.get(n).map(String::as_str).ok_or_else(|| {
                let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                RuntimeError::InvalidRequest(if known.is_empty() {
                    format!("unknown prompt_name `{n}`: the model has no prompts")
                } else {
                    format!(
                        "unknown prompt_name `{n}`; the model's prompts: {}",
                        known.join(", ")
                    )
                })
            }),
        }
    }
}

fn files_err(id: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::ModelFiles {
        id: id.to_string(),
        message: message.into(),
    }
}

fn read_json_opt(id: &str, path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| files_err(id, format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| files_err(id, format!("{} is not valid JSON: {e}", path.display())))
}

/// Whether `path` names a GGUF file (extension `.gguf`, any case).
pub(crate) fn is_gguf_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Resolves where the model is and what it is.
pub(crate) fn resolve(entry: &ModelEntry) -> Result<ModelFiles> {
    let id = entry.id.as_str();
    let path = match &entry.source {
        ModelSource::Path(p) => p.clone(),
        ModelSource::Hf {
            repo,
            revision,
            file,
        } => crate::hub::resolve(repo, revision, file.as_deref())
            .map_err(|e| files_err(id, e.to_string()))?,
    };
    let is_gguf = path.is_file() && is_gguf_name(&path);
    let (format, architecture, dir, config, gguf) = if is_gguf {
        let meta = GgufMetadata::read(&path).map_err(|e| files_err(id, e.to_string()))?;
        let arch = meta
            .architecture()
            .ok_or_else(|| files_err(id, format!("{}: no general.architecture", path.display())))?
            .to_string();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (WeightFormat::Gguf, arch, dir, Value::Null, Some(meta))
    } else if path.is_dir() {
        let config_path = path.join("config.json");
        let config = read_json_opt(id, &config_path)?
            .ok_or_else(|| files_err(id, format!("{} is missing", config_path.display())))?;
        let arch = config
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| files_err(id, format!("{}: no `model_type`", config_path.display())))?
            .to_string();
        if !path.join("model.safetensors").is_file()
            && !path.join("model.safetensors.index.json").is_file()
        {
            return Err(files_err(
                id,
                format!(
                    "{} has neither model.safetensors nor model.safetensors.index.json",
                    path.display()
                ),
            ));
        }
        (WeightFormat::Safetensors, arch, path.clone(), config, None)
    } else {
        return Err(files_err(
            id,
            format!(
                "{} is neither a model directory nor a .gguf file",
                path.display()
            ),
        ));
    };
    // A causal LM reranks through its logits (Qwen3-Reranker): the backend generates.
    let backend_task = match entry.task {
        Task::Rerank if is_causal_lm(format, &config) => Task::Generate,
        other => other,
    };
    Ok(ModelFiles {
        spec: ModelSpec {
            id: id.to_string(),
            task: backend_task,
            path,
            format,
            architecture,
            dtype: entry.dtype,
            options: entry.options.clone(),
        },
        dir,
        config,
        gguf,
    })
}

/// Loads the tokenizer and the rest of the text side.
/// The longest input an encoder's position table allows: `max_position_embeddings`,
/// less the `pad_token_id + 1` rows RoBERTa-family models skip (their positions
/// start after the padding id, so 514 rows hold 512 tokens).
fn encoder_input_limit(config: &Value) -> Option<u64> {
    let rows = config
        .get("max_position_embeddings")
        .and_then(Value::as_u64)?;
    let roberta = config
        .get("model_type")
        .and_then(Value::as_str)
        .is_some_and(|t| matches!(t, "roberta" | "xlm-roberta" | "camembert"));
    if !roberta {
        return Some(rows);
    }
    let pad = config
        .get("pad_token_id")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    Some(rows.saturating_sub(pad + 1))
}

/// A GGUF decoder, or a checkpoint whose `architectures` name a `*ForCausalLM`.
fn is_causal_lm(format: WeightFormat, config: &Value) -> bool {
    format == WeightFormat::Gguf
        || config["architectures"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.ends_with("ForCausalLM")))
        })
}

/// The longest prompt a decoder reranker scores when the manifest sets no
/// `max_length` (Qwen3-Reranker's model card uses 8192).
const DECODER_RERANK_MAX_TOKENS: usize = 8192;

pub(crate) fn load_text_side(entry: &ModelEntry, files: &ModelFiles) -> Result<TextSide> {
    let id = entry.id.as_str();
    let tok_cfg = read_json_opt(id, &files.dir.join("tokenizer_config.json"))?;
    let tokenizer_path = match &entry.tokenizer {
        Some(p) if p.is_dir() => Some(p.join("tokenizer.json")),
        Some(p) => Some(p.clone()),
        None => Some(files.dir.join("tokenizer.json")).filter(|p| p.is_file()),
    };
    let mut tokenizer = match (&tokenizer_path, &files.gguf) {
        (Some(p), _) => TextTokenizer::from_file(p).map_err(|e| files_err(id, e.to_string()))?,
        (None, Some(meta)) => {
            TextTokenizer::from_gguf(meta).map_err(|e| files_err(id, e.to_string()))?
        }
        (None, None) => {
            return Err(files_err(
                id,
                format!("{} is missing", files.dir.join("tokenizer.json").display()),
            ));
        }
    };

    match entry.task {
        Task::Embed | Task::Rerank => {
            let st = read_json_opt(id, &files.dir.join("sentence_bert_config.json"))?
                .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64));
            let tok_max = tok_cfg
                .as_ref()
                .and_then(|c| c.get("model_max_length"))
                .and_then(Value::as_f64)
                .filter(|m| *m < 1e9)
                .map(|m| m as u64);
            let pos = encoder_input_limit(&files.config);
            let limit = entry
                .max_length
                .map(|m| m as u64)
                .into_iter()
                .chain(st.or(tok_max))
                .chain(pos)
                .min();
            if let Some(l) = limit {
                tokenizer
                    .set_max_length(l as usize)
                    .map_err(|e| files_err(id, e.to_string()))?;
            }
        }
        Task::Generate => {}
    }

    let (chat_template, eos_ids, defaults) = if entry.task == Task::Generate {
        generation_side(entry, files, tok_cfg.as_ref(), &tokenizer)?
    } else {
        (None, Vec::new(), SamplingParams::default())
    };

    let decoder_rerank = match (entry.task, files.spec.task) {
        (Task::Rerank, Task::Generate) => {
            let context = files
                .config
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .map_or(usize::MAX, |m| m as usize);
            let limit = entry
                .max_length
                .unwrap_or(DECODER_RERANK_MAX_TOKENS)
                .min(context);
            let instruction = entry.options.get("instruction").map(String::as_str);
            Some(DecoderRerank::new(&tokenizer, instruction, limit)?)
        }
        _ => None,
    };
    Ok(TextSide {
        tokenizer,
        chat_template,
        eos_ids,
        defaults,
        activation: rerank_activation(&files.config),
        decoder_rerank,
        prompts: match entry.task {
            Task::Embed => Prompts::read(id, &files.dir)?,
            _ => Prompts::default(),
        },
        grammar: std::sync::OnceLock::new(),
    })
}

type GenerationSide = (Option<ChatTemplate>, Vec<u32>, SamplingParams);

fn generation_side(
    entry: &ModelEntry,
    files: &ModelFiles,
    tok_cfg: Option<&Value>,
    tokenizer: &TextTokenizer,
) -> Result<GenerationSide> {
    let id = entry.id.as_str();
    let gen_cfg = read_json_opt(id, &files.dir.join("generation_config.json"))?;
    let gguf = files.gguf.as_ref();
    let gguf_token = |key: &str| -> Option<String> {
        let m = gguf?;
        let idx = m.u64(key)? as usize;
        m.get("tokenizer.ggml.tokens")?
            .as_array()?
            .get(idx)?
            .as_str()
            .map(str::to_string)
    };
    let cfg_token = |key: &str| -> Option<String> {
        let v = tok_cfg?.get(key)?;
        v.as_str()
            .or_else(|| v.get("content").and_then(Value::as_str))
            .map(str::to_string)
    };
    let bos = cfg_token("bos_token")
        .or_else(|| gguf_token("tokenizer.ggml.bos_token_id"))
        .unwrap_or_default();
    let eos = cfg_token("eos_token")
        .or_else(|| gguf_token("tokenizer.ggml.eos_token_id"))
        .unwrap_or_default();

    // Chat template: chat_template.jinja, tokenizer_config.json, or the GGUF metadata.
    let jinja = files.dir.join("chat_template.jinja");
    let source = if files.gguf.is_none() && jinja.is_file() {
        Some(
            std::fs::read_to_string(&jinja)
                .map_err(|e| files_err(id, format!("cannot read {}: {e}", jinja.display())))?,
        )
    } else {
        let from_cfg = tok_cfg
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| match t {
                Value::String(s) => Some(s.clone()),
                Value::Array(list) => list
                    .iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|e| e.get("template").and_then(Value::as_str))
                    .map(str::to_string),
                _ => None,
            });
        from_cfg.or_else(|| {
            gguf.and_then(|m| m.str("tokenizer.chat_template"))
                .map(str::to_string)
        })
    };
    let chat_template = match source {
        Some(s) => Some(
            ChatTemplate::new(&s, &bos, &eos)
                .map_err(|e| files_err(id, format!("chat template: {e}")))?,
        ),
        None => None,
    };

    // EOS ids: generation_config.json, config.json, GGUF metadata, the eos token.
    let ids_of = |v: Option<&Value>| -> Vec<u32> {
        match v {
            Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut eos_ids = ids_of(gen_cfg.as_ref().and_then(|g| g.get("eos_token_id")));
    if eos_ids.is_empty() {
        eos_ids = ids_of(files.config.get("eos_token_id"));
    }
    if let Some(m) = gguf {
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if let Some(MetaValue::UInt(x)) = m.get(key) {
                eos_ids.push(*x as u32);
            }
        }
    }
    if eos_ids.is_empty()
        && let Some(e) = tokenizer.token_to_id(&eos)
    {
        eos_ids.push(e);
    }
    eos_ids.sort_unstable();
    eos_ids.dedup();

    // Sampling defaults: generation_config.json, as transformers' generate() uses them.
    let mut defaults = SamplingParams::default();
    if let Some(g) = &gen_cfg {
        let f = |k: &str| g.get(k).and_then(Value::as_f64);
        let do_sample = g.get("do_sample").and_then(Value::as_bool).unwrap_or(false);
        defaults.temperature = if do_sample {
            f("temperature").unwrap_or(1.0) as f32
        } else {
            0.0
        };
        if let Some(p) = f("top_p") {
            defaults.top_p = p as f32;
        }
        if let Some(k) = g.get("top_k").and_then(Value::as_u64) {
            defaults.top_k = k as usize;
        }
        if let Some(m) = f("min_p") {
            defaults.min_p = m as f32;
        }
        if let Some(r) = f("repetition_penalty") {
            defaults.repetition_penalty = r as f32;
        }
        if let Some(n) = g.get("max_new_tokens").and_then(Value::as_u64) {
            defaults.max_tokens = n as usize;
        }
    }
    // The manifest's default for over-long prompts (requests may override it).
    defaults.truncate_prompt = match entry.options.get("truncate_prompt").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(files_err(
                id,
                format!("option `truncate_prompt` = `{other}` is not true or false"),
            ));
        }
    };
    Ok((chat_template, eos_ids, defaults))
}

fn rerank_activation(config: &Value) -> Activation {
    let named = config
        .get("sentence_transformers")
        .and_then(|s| s.get("activation_fn"))
        .and_then(Value::as_str);
    match named {
        Some(n) if n.ends_with("Identity") => Activation::Identity,
        Some(n) if n.ends_with("Tanh") => Activation::Tanh,
        Some(n) if n.ends_with("Sigmoid") => Activation::Sigmoid,
        _ => {
            let labels = config
                .get("id2label")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .or_else(|| {
                    config
                        .get("num_labels")
                        .and_then(Value::as_u64)
                        .map(|n| n as usize)
                })
                .unwrap_or(1);
            if labels == 1 {
                Activation::Sigmoid
            } else {
                Activation::Identity
            }
        }
    }
}
