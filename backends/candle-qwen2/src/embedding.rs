//! Embeddings from a decoder (Qwen3-Embedding): the sentence-transformers chain of
//! the model directory, read strictly, pools the last token's final hidden state and
//! L2-normalizes it. The runtime adds the prompt and the tokenizer the end-of-text
//! token, and every input runs alone, so a text's embedding never depends on its batch.

use std::path::Path;

use gllm_api::{BackendError, ModelSpec};
use gllm_arch::checkpoint::read_json;
use serde_json::Value;

/// How the final hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// L2-normalize the pooled vector (a `Normalize` module).
    pub normalize: bool,
}

impl Pooling {
    /// The pooling of `spec`'s model directory: from `modules.json` (Transformer at
    /// the root, then a last-token Pooling, then optionally Normalize), or, without
    /// sentence-transformers files, from the manifest options `pooling = "last_token"`
    /// and `normalize` (default true). Any other pooling is unsupported.
    pub fn load(spec: &ModelSpec) -> Result<Self, BackendError> {
        let dir = spec.path.as_path();
        let modules = dir.join("modules.json");
        if !modules.is_file() {
            return Self::from_options(spec);
        }
        let list = read_json(&modules)?;
        let list = list.as_array().ok_or_else(|| {
            BackendError::invalid_model(format!("{}: not a list of modules", modules.display()))
        })?;
        let mut pooled = false;
        let mut normalize = false;
        for m in list {
            let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
            let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
            match ty.rsplit('.').next().unwrap_or_default() {
                "Transformer" if path.is_empty() && !pooled => {}
                "Pooling" if !pooled => {
                    Self::check_last_token(&dir.join(path).join("config.json"))?;
                    pooled = true;
                }
                "Normalize" if pooled && !normalize => normalize = true,
                _ => {
                    return Err(BackendError::unsupported(format!(
                        "{}: module `{ty}` (path `{path}`) is not supported in a decoder embedder \
                         (Transformer, last-token Pooling, Normalize)",
                        modules.display()
                    )));
                }
            }
        }
        if !pooled {
            return Err(BackendError::invalid_model(format!(
                "{}: no Pooling module",
                modules.display()
            )));
        }
        Ok(Self { normalize })
    }

    fn check_last_token(config: &Path) -> Result<(), BackendError> {
        let cfg = read_json(config)?;
        let on: Vec<&str> = cfg
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| k.starts_with("pooling_mode_") && v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        if on != ["pooling_mode_lasttoken"] {
            return Err(BackendError::unsupported(format!(
                "{}: a decoder embeds with last-token pooling only, not {on:?}",
                config.display()
            )));
        }
        Ok(())
    }

    fn from_options(spec: &ModelSpec) -> Result<Self, BackendError> {
        match spec.options.get("pooling").map(String::as_str) {
            Some("last_token") => {}
            Some(other) => {
                return Err(BackendError::invalid_input(format!(
                    "option `pooling` = `{other}`: a decoder embeds with `last_token` pooling"
                )));
            }
            None => {
                return Err(BackendError::invalid_model(format!(
                    "{}: to embed with a decoder, the directory needs sentence-transformers files \
                     (modules.json) or the manifest needs `pooling = \"last_token\"` in [models.options]",
                    spec.path.display()
                )));
            }
        }
        let normalize = match spec.options.get("normalize").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(BackendError::invalid_input(format!(
                    "option `normalize` = `{other}` is not true or false"
                )));
            }
        };
        Ok(Self { normalize })
    }

    /// Pools the last row of `hidden` (the final hidden states of one input).
    pub fn pool(&self, hidden: &[Vec<f32>]) -> Result<Vec<f32>, BackendError> {
        let mut v = hidden
            .last()
            .cloned()
            .ok_or_else(|| BackendError::invalid_input("an empty input has no last token"))?;
        if self.normalize {
            // As torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(v)
    }
}
