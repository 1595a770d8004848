//! The model manifest, `models.toml`.
//!
//! ```toml
//! [defaults]
//! devices = ["gpu", "cpu"]        # preference order
//!
//! [[models]]
//! id = "minilm"
//! task = "embed"                  # embed | rerank | generate
//! path = "models/all-MiniLM-L6-v2" # a model directory or a .gguf file (relative to this file)
//! # hf = "sentence-transformers/all-MiniLM-L6-v2"  # instead of path: the Hugging Face cache
//! # revision = "main"           # with hf: branch, tag or commit
//! # file = "model-q4_0.gguf"    # with hf: one .gguf file of the repo instead of a model directory
//! backends = ["burn-bert"]        # preference order; default: every backend that fits
//! devices = ["gpu", "cpu"]
//! dtype = "f32"                   # optional: f32 | f16 | bf16
//! ```
//!
//! Every mistake is an error naming the file, the line, the model id and the key.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use gllm_api::{DType, Device, Task};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Result, RuntimeError};

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where it was read from (for messages), if from a file.
    pub origin: String,
    /// The models, in file order.
    pub models: Vec<ModelEntry>,
    /// Backend plugin libraries to load (`[plugins] libraries = [...]`), resolved paths.
    pub plugin_libraries: Vec<PathBuf>,
    /// What `[defaults]` gives entries that do not say (also models added by location).
    pub defaults: Defaults,
}

/// The manifest's `[defaults]`, with the built-in ones where it is silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Backends in preference order; empty means every registered backend that fits.
    pub backends: Vec<String>,
    /// Devices in preference order ([`DEFAULT_DEVICES`] unless given).
    pub devices: Vec<Device>,
    /// Requested compute dtype.
    pub dtype: Option<DType>,
    /// Cap on input tokens.
    pub max_length: Option<usize>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            devices: DEFAULT_DEVICES.to_vec(),
            dtype: None,
            max_length: None,
        }
    }
}

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory or file.
    Path(PathBuf),
    /// A Hugging Face repository, resolved through the standard HF cache
    /// (and downloaded there with the `download` feature; see [`crate::hub`]).
    Hf {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (default `main`).
        revision: String,
        /// One `.gguf` file of the repository (`file = "..."`), instead of a
        /// transformers model directory.
        file: Option<String>,
    },
}

/// One `[[models]]` entry after defaults were applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// Unique id, used by the CLI and the server.
    pub id: String,
    /// What the model is for.
    pub task: Task,
    /// Where its files are.
    pub source: ModelSource,
    /// A tokenizer.json (or a directory holding one) to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// Backends in preference order; empty means every registered backend that fits.
    pub backends: Vec<String>,
    /// Devices in preference order.
    pub devices: Vec<Device>,
    /// Requested compute dtype.
    pub dtype: Option<DType>,
    /// Cap on input tokens (inputs are truncated to it).
    pub max_length: Option<usize>,
    /// Backend-specific options.
    pub options: BTreeMap<String, String>,
    /// Line of the entry in the manifest (1-based), for messages.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    defaults: Option<Spanned<toml::Table>>,
    #[serde(default)]
    models: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    plugins: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    backends: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    dtype: Option<String>,
    max_length: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    #[serde(default)]
    libraries: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    task: String,
    path: Option<String>,
    hf: Option<String>,
    revision: Option<String>,
    file: Option<String>,
    tokenizer: Option<String>,
    backends: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    dtype: Option<String>,
    max_length: Option<usize>,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

/// Default device order when neither the model nor `[defaults]` names one.
pub const DEFAULT_DEVICES: [Device; 2] = [
    Device {
        kind: gllm_api::DeviceKind::Gpu,
        ordinal: 0,
    },
    Device::CPU,
];

struct Ctx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }
    fn err_at(&self, span: Option<Range<usize>>, msg: impl std::fmt::Display) -> RuntimeError {
        match span {
            Some(s) => {
                RuntimeError::Manifest(format!("{}:{}: {msg}", self.origin, self.line_of(s.start)))
            }
            None => RuntimeError::Manifest(format!("{}: {msg}", self.origin)),
        }
    }
}

impl Manifest {
    /// Reads and validates a manifest file. Relative paths inside it are relative to its directory.
    pub fn from_file(path: &Path, known_backends: &[String]) -> Result<Self> {
        let text = Self::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base, known_backends)
    }

    /// The text of a manifest file.
    pub fn read(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| {
            RuntimeError::Manifest(format!("cannot read manifest {}: {e}", path.display()))
        })
    }

    /// The plugin libraries a manifest names (`[plugins] libraries = [...]`), read
    /// before the rest so that their backends can be named in `backends`.
    pub fn plugin_libraries(text: &str, origin: &str, base_dir: &Path) -> Result<Vec<PathBuf>> {
        let ctx = Ctx { origin, text };
        let doc: RawDoc = toml::from_str(text)
            .map_err(|e| ctx.err_at(e.span(), e.message().trim_end().replace('\n', "; ")))?;
        Self::plugins_of(&ctx, doc.plugins, base_dir)
    }

    fn plugins_of(
        ctx: &Ctx<'_>,
        plugins: Option<Spanned<toml::Table>>,
        base_dir: &Path,
    ) -> Result<Vec<PathBuf>> {
        let Some(t) = plugins else {
            return Ok(Vec::new());
        };
        let span = t.span();
        let raw: RawPlugins =
            toml::Value::Table(t.into_inner())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ctx.err_at(Some(span), format!("[plugins]: {}", e.message().trim_end()))
                })?;
        Ok(raw
            .libraries
            .iter()
            .map(|l| resolve_path(base_dir, l))
            .collect())
    }

    /// Parses and validates manifest text. `origin` names it in messages, `base_dir`
    /// anchors relative paths, `known_backends` are the backend names that exist.
    pub fn parse(
        text: &str,
        origin: &str,
        base_dir: &Path,
        known_backends: &[String],
    ) -> Result<Self> {
        let ctx = Ctx { origin, text };
        let doc: RawDoc = toml::from_str(text)
            .map_err(|e| ctx.err_at(e.span(), e.message().trim_end().replace('\n', "; ")))?;

        let defaults: RawDefaults = match doc.defaults {
            Some(t) => {
                let span = t.span();
                toml::Value::Table(t.into_inner())
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        ctx.err_at(
                            Some(span),
                            format!("[defaults]: {}", e.message().trim_end()),
                        )
                    })?
            }
            None => RawDefaults::default(),
        };
        let default_devices = match &defaults.devices {
            Some(d) => {
                parse_devices(d).map_err(|m| ctx.err_at(None, format!("[defaults]: {m}")))?
            }
            None => DEFAULT_DEVICES.to_vec(),
        };
        if let Some(b) = &defaults.backends {
            check_backends(b, known_backends)
                .map_err(|m| ctx.err_at(None, format!("[defaults]: {m}")))?;
        }
        let default_dtype = match &defaults.dtype {
            Some(d) => {
                Some(parse_dtype(d).map_err(|m| ctx.err_at(None, format!("[defaults]: {m}")))?)
            }
            None => None,
        };

        let plugin_libraries = Self::plugins_of(&ctx, doc.plugins, base_dir)?;

        let mut models = Vec::new();
        let mut seen = HashSet::new();
        for (index, spanned) in doc.models.into_iter().enumerate() {
            let span = spanned.span();
            let line = ctx.line_of(span.start);
            let table = spanned.into_inner();
            let label = match table.get("id").and_then(|v| v.as_str()) {
                Some(id) => format!("model `{id}`"),
                None => format!("models[{index}]"),
            };
            let at = |msg: String| ctx.err_at(Some(span.clone()), format!("{label}: {msg}"));
            let raw: RawModel = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| at(e.message().trim_end().to_string()))?;

            if raw.id.trim().is_empty() {
                return Err(at("`id` must not be empty".into()));
            }
            if !seen.insert(raw.id.clone()) {
                return Err(at(format!("duplicate id `{}`", raw.id)));
            }
            let task = parse_task(&raw.task).map_err(|m| at(format!("`task`: {m}")))?;
            let source = match (&raw.path, &raw.hf) {
                (Some(_), Some(_)) => {
                    return Err(at("give either `path` or `hf`, not both".into()));
                }
                (None, None) => {
                    return Err(at("missing `path` (a model directory or .gguf file) or `hf` (a Hugging Face repo id)".into()));
                }
                (Some(p), None) => {
                    let resolved = resolve_path(base_dir, p);
                    if !resolved.exists() {
                        return Err(at(format!("`path`: {} does not exist", resolved.display())));
                    }
                    ModelSource::Path(resolved)
                }
                (None, Some(repo)) => {
                    if !is_hf_repo(repo) {
                        return Err(at(format!("`hf`: `{repo}` is not of the form org/name")));
                    }
                    if let Some(rev) = &raw.revision
                        && !is_repo_path(rev)
                    {
                        return Err(at(format!(
                            "`revision`: `{rev}` is not a branch, tag or commit"
                        )));
                    }
                    if let Some(f) = &raw.file {
                        if !is_repo_path(f) {
                            return Err(at(format!(
                                "`file`: `{f}` is not a relative path inside the repo"
                            )));
                        }
                        if !crate::model_files::is_gguf_name(Path::new(f)) {
                            return Err(at(format!(
                                "`file`: `{f}` is not a .gguf file (without `file`, gllm loads the repo's transformers files)"
                            )));
                        }
                    }
                    ModelSource::Hf {
                        repo: repo.clone(),
                        revision: raw.revision.clone().unwrap_or_else(|| "main".into()),
                        file: raw.file.clone(),
                    }
                }
            };
            if raw.revision.is_some() && raw.hf.is_none() {
                return Err(at("`revision` only goes with `hf`".into()));
            }
            if raw.file.is_some() && raw.hf.is_none() {
                return Err(at(
                    "`file` only goes with `hf` (with `path`, name the .gguf file in `path`)"
                        .into(),
                ));
            }
            let tokenizer = match &raw.tokenizer {
                Some(t) => {
                    let p = resolve_path(base_dir, t);
                    if !p.exists() {
                        return Err(at(format!("`tokenizer`: {} does not exist", p.display())));
                    }
                    Some(p)
                }
                None => None,
            };
            let backends = raw
                .backends
                .clone()
                .or_else(|| defaults.backends.clone())
                .unwrap_or_default();
            check_backends(&backends, known_backends)
                .map_err(|m| at(format!("`backends`: {m}")))?;
            if raw.backends.as_ref().is_some_and(Vec::is_empty) {
                return Err(at(
                    "`backends` is empty; leave it out to allow every backend".into(),
                ));
            }
            let devices = match &raw.devices {
                Some(d) => parse_devices(d).map_err(|m| at(format!("`devices`: {m}")))?,
                None => default_devices.clone(),
            };
            let dtype = match &raw.dtype {
                Some(d) => Some(parse_dtype(d).map_err(|m| at(format!("`dtype`: {m}")))?),
                None => default_dtype,
            };
            let max_length = raw.max_length.or(defaults.max_length);
            if max_length == Some(0) {
                return Err(at("`max_length` must be at least 1".into()));
            }
            let options = raw
                .options
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect();
            models.push(ModelEntry {
                id: raw.id,
                task,
                source,
                tokenizer,
                backends,
                devices,
                dtype,
                max_length,
                options,
                line,
            });
        }
        Ok(Self {
            origin: origin.to_string(),
            models,
            plugin_libraries,
            defaults: Defaults {
                backends: defaults.backends.clone().unwrap_or_default(),
                devices: default_devices,
                dtype: default_dtype,
                max_length: defaults.max_length,
            },
        })
    }

    /// A manifest with no models, the built-in defaults and no plugins (for models
    /// named by location alone).
    pub fn empty() -> Self {
        Self {
            origin: "(no manifest)".into(),
            models: Vec::new(),
            plugin_libraries: Vec::new(),
            defaults: Defaults::default(),
        }
    }

    /// The id of the model `spec` names: an id of this manifest as it is, or a model
    /// location ([`crate::model_location`]: a directory, a `.gguf` file,
    /// `hf:org/name[:file.gguf]`), added as an entry with [`Self::defaults`] under an id
    /// derived from its name (`-2`, `-3`… when taken). `task` is the task asked for;
    /// without it the task is read from the model's files.
    pub fn add_location(&mut self, spec: &str, task: Option<Task>) -> Result<String> {
        if self.models.iter().any(|m| m.id == spec) {
            return Ok(spec.to_string());
        }
        if !crate::model_location::is_location(spec) {
            // Not a location either: the unknown-id error, listing the ids.
            return self.model(spec).map(|m| m.id.clone());
        }
        let base = std::env::current_dir().unwrap_or_default();
        let source = crate::model_location::parse(spec, &base)?;
        // The same location twice (e.g. `serve --model A --model A`) is one model.
        if let Some(m) = self
            .models
            .iter()
            .find(|m| m.source == source && task.is_none_or(|t| t == m.task))
        {
            return Ok(m.id.clone());
        }
        let task = match task {
            Some(t) => {
                // Refuse early what the files say the model cannot do; when they cannot
                // tell (an hf: model not fetched yet), loading will.
                if let Ok(tasks) = crate::model_location::tasks_of(spec, &source)
                    && !tasks.contains(&t)
                {
                    let can: Vec<&str> = tasks.iter().map(|t| t.as_str()).collect();
                    return Err(RuntimeError::ModelLocation {
                        location: spec.to_string(),
                        message: format!("this model serves {}, not {t}", can.join(" or ")),
                    });
                }
                t
            }
            None => crate::model_location::infer_task(spec, &source)?,
        };
        let stem = crate::model_location::id_for(&source);
        let mut id = stem.clone();
        let mut n = 1;
        while self.models.iter().any(|m| m.id == id) {
            n += 1;
            id = format!("{stem}-{n}");
        }
        self.models.push(ModelEntry {
            id: id.clone(),
            task,
            source,
            tokenizer: None,
            backends: self.defaults.backends.clone(),
            devices: self.defaults.devices.clone(),
            dtype: self.defaults.dtype,
            max_length: self.defaults.max_length,
            options: BTreeMap::new(),
            line: 0,
        });
        Ok(id)
    }

    /// The entry with this id.
    pub fn model(&self, id: &str) -> Result<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| RuntimeError::UnknownModel {
                id: id.to_string(),
                known: self
                    .models
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn parse_task(s: &str) -> std::result::Result<Task, String> {
    match s {
        "embed" => Ok(Task::Embed),
        "rerank" => Ok(Task::Rerank),
        "generate" => Ok(Task::Generate),
        other => Err(format!(
            "unknown task `{other}` (expected embed, rerank or generate)"
        )),
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::Bf16),
        other => Err(format!(
            "unknown dtype `{other}` (expected f32, f16 or bf16)"
        )),
    }
}

fn parse_devices(list: &[String]) -> std::result::Result<Vec<Device>, String> {
    if list.is_empty() {
        return Err("the device list is empty".into());
    }
    let mut out = Vec::new();
    for d in list {
        let dev = Device::parse(d)
            .ok_or_else(|| format!("unknown device `{d}` (expected cpu, gpu or gpu:N)"))?;
        if out.contains(&dev) {
            return Err(format!("device `{d}` is listed twice"));
        }
        out.push(dev);
    }
    Ok(out)
}

/// `Err` naming the first of `list` that is not among the `known` backends, with the
/// ones this build has.
pub fn check_backends(list: &[String], known: &[String]) -> std::result::Result<(), String> {
    for b in list {
        if !known.iter().any(|k| k == b) {
            return Err(format!(
                "unknown backend `{b}` (available in this build: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// A Hugging Face repository id: `org/name`.
pub(crate) fn is_hf_repo(repo: &str) -> bool {
    repo.split('/').count() == 2 && !repo.split('/').any(str::is_empty)
}

/// A path inside a repository: plain `/`-separated components, no `..`.
pub(crate) fn is_repo_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Expands `${VAR}`, `${VAR:-default}` and a leading `~/`, and anchors relative paths at `base`.
pub(crate) fn resolve_path(base: &Path, raw: &str) -> PathBuf {
    let mut s = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        s.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                // ${NAME} or ${NAME:-default}
                let body = &rest[start + 2..start + 2 + end];
                let (name, default) = match body.split_once(":-") {
                    Some((n, d)) => (n, d),
                    None => (body, ""),
                };
                match std::env::var(name) {
                    Ok(v) if !v.is_empty() => s.push_str(&v),
                    _ => s.push_str(default),
                }
                rest = &rest[start + 3 + end..];
            }
            None => {
                s.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    s.push_str(rest);
    let expanded = match s.strip_prefix("~/") {
        Some(tail) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(tail),
        None => PathBuf::from(s),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}
