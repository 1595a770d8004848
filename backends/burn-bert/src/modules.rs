//! The sentence-transformers module chain of an embedding model:
//! `modules.json` → Transformer → `1_Pooling/config.json` → `Normalize`.

use std::path::{Path, PathBuf};

use gllm_api::BackendError;
use gllm_arch::checkpoint::read_json;
use serde_json::Value;

use crate::pooling::Pooling;

/// What follows the encoder when embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedChain {
    /// Directory of the Transformer module (config.json and weights).
    pub transformer_dir: PathBuf,
    /// How token states become one row.
    pub pooling: Pooling,
    /// Whether rows are L2-normalized.
    pub normalize: bool,
    /// `sentence_bert_config.json` `max_seq_length`, when given.
    pub max_seq_length: Option<usize>,
    /// The Pooling module's `word_embedding_dimension`, when given.
    pub pooling_width: Option<usize>,
}

impl EmbedChain {
    /// Reads the chain of the model in `dir`; without `modules.json`, mean
    /// pooling over the model in `dir`, as sentence-transformers does.
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(Self {
                transformer_dir: dir.to_path_buf(),
                pooling: Pooling::MEAN,
                normalize: false,
                max_seq_length: read_max_seq_length(dir)?,
                pooling_width: None,
            });
        }
        let modules = read_json(&modules_path)?;
        let list = modules.as_array().ok_or_else(|| {
            BackendError::invalid_model(format!("{}: not a JSON array", modules_path.display()))
        })?;
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut normalize = false;
        for (i, module) in list.iter().enumerate() {
            let ty = module.get("type").and_then(Value::as_str).unwrap_or("");
            let sub = module.get("path").and_then(Value::as_str).unwrap_or("");
            if sub.contains("..") || Path::new(sub).is_absolute() {
                return Err(BackendError::invalid_model(format!(
                    "{}: module path `{sub}` leaves the model directory",
                    modules_path.display()
                )));
            }
            let kind = ty.rsplit('.').next().unwrap_or(ty);
            let order_ok = match kind {
                "Transformer" => transformer_dir.is_none() && pooling.is_none(),
                "Pooling" => transformer_dir.is_some() && pooling.is_none(),
                "Normalize" => pooling.is_some() && !normalize,
                _ => {
                    return Err(BackendError::unsupported(format!(
                        "{}: module {i} of type `{ty}` is not supported (Transformer, Pooling, Normalize)",
                        modules_path.display()
                    )));
                }
            };
            if !order_ok {
                return Err(BackendError::invalid_model(format!(
                    "{}: module {i} (`{ty}`) is out of order (Transformer, Pooling, Normalize expected)",
                    modules_path.display()
                )));
            }
            match kind {
                "Transformer" => transformer_dir = Some(dir.join(sub)),
                "Pooling" => pooling = Some(read_pooling(&dir.join(sub).join("config.json"))?),
                _ => normalize = true,
            }
        }
        let (pooling, pooling_width) = match pooling {
            Some((p, w)) => (Some(p), w),
            None => (None, None),
        };
        let transformer_dir = transformer_dir.ok_or_else(|| {
            BackendError::invalid_model(format!(
                "{}: no Transformer module",
                modules_path.display()
            ))
        })?;
        let max_seq_length = read_max_seq_length(&transformer_dir)?;
        Ok(Self {
            transformer_dir,
            // A chain without Pooling gives token embeddings, not one row per text.
            pooling: pooling.ok_or_else(|| {
                BackendError::unsupported(format!(
                    "{}: no Pooling module (token embeddings are not served)",
                    modules_path.display()
                ))
            })?,
            normalize,
            max_seq_length,
            pooling_width,
        })
    }
}

/// `1_Pooling/config.json`: the `pooling_mode_*` flags (or a `pooling_mode` name).
fn read_pooling(path: &Path) -> Result<(Pooling, Option<usize>), BackendError> {
    let json = read_json(path)?;
    let flag = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    let mut p = Pooling {
        cls: flag("pooling_mode_cls_token"),
        max: flag("pooling_mode_max_tokens"),
        mean: flag("pooling_mode_mean_tokens"),
        mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens"),
        weighted_mean: flag("pooling_mode_weightedmean_tokens"),
        last_token: flag("pooling_mode_lasttoken"),
    };
    if let Some(mode) = json.get("pooling_mode").and_then(Value::as_str) {
        match mode {
            "cls" => p.cls = true,
            "max" => p.max = true,
            "mean" => p.mean = true,
            "mean_sqrt_len_tokens" => p.mean_sqrt_len = true,
            "weightedmean" => p.weighted_mean = true,
            "lasttoken" => p.last_token = true,
            other => {
                return Err(BackendError::unsupported(format!(
                    "{}: pooling_mode `{other}` is not supported",
                    path.display()
                )));
            }
        }
    }
    if p.count() == 0 {
        return Err(BackendError::invalid_model(format!(
            "{}: no pooling mode is enabled",
            path.display()
        )));
    }
    let width = json
        .get("word_embedding_dimension")
        .and_then(Value::as_u64)
        .map(|d| d as usize);
    Ok((p, width))
}

/// `sentence_bert_config.json` `max_seq_length` in `dir`, if the file says.
fn read_max_seq_length(dir: &Path) -> Result<Option<usize>, BackendError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let json = read_json(&path)?;
    Ok(json
        .get("max_seq_length")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .filter(|n| *n > 0))
}
