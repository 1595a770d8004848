//! A model named by where it is instead of by a manifest id: a model directory, a
//! `.gguf` file, or `hf:org/name` / `hf:org/name:file.gguf`. [`crate::manifest::Manifest::add_location`]
//! turns one into a manifest entry with the manifest's `[defaults]` (or the built-in
//! ones); its task is the one asked for, or read from the model's own files
//! ([`infer_task`]).

use std::path::{Path, PathBuf};

use gllm_api::Task;

use crate::error::{Result, RuntimeError};
use crate::gguf_meta::GgufMetadata;
use crate::manifest::{ModelSource, is_hf_repo, is_repo_path, resolve_path};
use crate::model_files::is_gguf_name;

/// Whether `spec` names a model location rather than a manifest id: it starts with
/// `hf:`, holds a path separator, ends with `.gguf`, or exists on disk.
pub fn is_location(spec: &str) -> bool {
    spec.starts_with("hf:")
        || spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || is_gguf_name(Path::new(spec))
        || Path::new(spec).exists()
}

fn bad(spec: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::ModelLocation {
        location: spec.to_string(),
        message: message.into(),
    }
}

/// Where `spec`'s files are (relative paths from `base`, `~/` and `${VAR}` expanded).
pub fn parse(spec: &str, base: &Path) -> Result<ModelSource> {
    if let Some(rest) = spec.strip_prefix("hf:") {
        let (repo, file) = match rest.split_once(':') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        if !is_hf_repo(repo) {
            return Err(bad(spec, "expected hf:org/name or hf:org/name:file.gguf"));
        }
        if let Some(f) = file
            && (!is_repo_path(f) || !is_gguf_name(Path::new(f)))
        {
            return Err(bad(
                spec,
                format!("`{f}` is not a .gguf file inside the repository"),
            ));
        }
        return Ok(ModelSource::Hf {
            repo: repo.to_string(),
            revision: "main".into(),
            file: file.map(str::to_string),
        });
    }
    let path = resolve_path(base, spec);
    if !path.exists() {
        return Err(bad(
            spec,
            format!(
                "{} does not exist (expected a model directory, a .gguf file or hf:org/name)",
                path.display()
            ),
        ));
    }
    if path.is_file() && !is_gguf_name(&path) {
        return Err(bad(
            spec,
            "neither a .gguf file nor a model directory (a directory with config.json)",
        ));
    }
    if path.is_dir() && !path.join("config.json").is_file() {
        return Err(bad(
            spec,
            format!(
                "{} has no config.json, so it is not a model directory (expected a transformers \
                 or sentence-transformers directory, or a .gguf file)",
                path.display()
            ),
        ));
    }
    Ok(ModelSource::Path(path))
}

/// The manifest id a location gets: the file's stem, the directory's name, or the
/// repository's name (its file's stem for `hf:org/name:file.gguf`).
pub fn id_for(source: &ModelSource) -> String {
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
    };
    match source {
        ModelSource::Path(p) => stem(&canonical(p)).unwrap_or_else(|| "model".into()),
        ModelSource::Hf { repo, file, .. } => file
            .as_deref()
            .and_then(|f| stem(Path::new(f)))
            .unwrap_or_else(|| repo.rsplit('/').next().unwrap_or(repo).to_string()),
    }
}

/// `p` without `.` or `..` at its end (so `gllm embed --model .` is named after the
/// directory).
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The tasks the model at `source` can serve, read from its files: a GGUF decoder
/// generates; in a directory, a `*ForCausalLM` generates, a
/// `*ForSequenceClassification` reranks, and a sentence-transformers layout
/// (`modules.json`) or a bare encoder (`BertModel`, `RobertaModel`, `XLMRobertaModel`)
/// embeds.
pub fn tasks_of(spec: &str, source: &ModelSource) -> Result<Vec<Task>> {
    let path = match source {
        ModelSource::Path(p) => p,
        ModelSource::Hf { .. } => {
            return Err(bad(
                spec,
                "the task of an hf: model cannot be read before it is fetched; give it \
                 (--task embed|rerank|generate)",
            ));
        }
    };
    if path.is_file() {
        let meta = GgufMetadata::read(path).map_err(|e| bad(spec, e.to_string()))?;
        return match meta.architecture() {
            Some("qwen2" | "qwen3" | "llama") => Ok(vec![Task::Generate]),
            Some(other) => Err(bad(
                spec,
                format!(
                    "GGUF architecture `{other}`: gllm generates with qwen2, qwen3 and llama GGUF files"
                ),
            )),
            None => Err(bad(spec, "the GGUF file names no general.architecture")),
        };
    }
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config)
        .map_err(|e| bad(spec, format!("{}: {e}", config.display())))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(spec, format!("{}: {e}", config.display())))?;
    let archs: Vec<&str> = json["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut tasks = Vec::new();
    if archs.iter().any(|a| a.ends_with("ForCausalLM")) {
        tasks.push(Task::Generate);
    }
    if archs
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"))
    {
        tasks.push(Task::Rerank);
    }
    let encoder = archs
        .iter()
        .any(|a| matches!(*a, "BertModel" | "RobertaModel" | "XLMRobertaModel"));
    if path.join("modules.json").is_file() || encoder {
        tasks.push(Task::Embed);
    }
    if tasks.is_empty() {
        return Err(bad(
            spec,
            format!(
                "{} names no architecture gllm can serve (architectures: [{}])",
                config.display(),
                archs.join(", ")
            ),
        ));
    }
    Ok(tasks)
}

/// The one task the model at `source` serves ([`tasks_of`]); several are an error
/// that lists them.
pub fn infer_task(spec: &str, source: &ModelSource) -> Result<Task> {
    let tasks = tasks_of(spec, source)?;
    if let [one] = tasks.as_slice() {
        return Ok(*one);
    }
    let names: Vec<&str> = tasks.iter().map(|t| t.as_str()).collect();
    Err(bad(
        spec,
        format!(
            "this model could serve {}; say which (--task {})",
            names.join(" or "),
            names.join("|")
        ),
    ))
}
