//! Models named by a Hugging Face repository (`hf = "org/name"` in the manifest).
//!
//! The files live in the Hugging Face cache, laid out as `huggingface_hub` lays
//! it out, so that Python tools and gllm share one copy:
//!
//! ```text
//! $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//! └── models--org--name/
//!     ├── refs/main                  # the commit that `main` resolved to
//!     └── snapshots/<commit>/        # the repository's files at that commit
//!         ├── config.json
//!         └── model.safetensors
//! ```
//!
//! Without the `download` cargo feature, a model must already be in the cache
//! (e.g. `huggingface-cli download org/name`). With it, [`resolve`] asks the Hub
//! (`HF_ENDPOINT`, default `https://huggingface.co`; `HF_TOKEN` for gated and
//! private repos) which commit the revision names and downloads the files gllm
//! reads that are not cached yet ([`needed_files`] says which). `HF_HUB_OFFLINE=1`
//! keeps to the cache. When the Hub cannot be reached, the cached snapshot of the
//! revision is used, as `huggingface_hub` does.
//!
//! A file is downloaded to `<name>.incomplete` beside its final place and renamed
//! when all its bytes are there: an interrupted download never leaves a file that
//! looks complete, and the next run resumes it. A lock file under
//! `.locks/models--org--name/` keeps two processes from writing the same file.
//!
//! Downloads report their progress to the handler installed with
//! [`set_progress_handler`]; the library itself prints nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[cfg(feature = "download")]
mod download;

/// Whether this build can download models (the `download` cargo feature).
pub const DOWNLOAD_ENABLED: bool = cfg!(feature = "download");

/// The default Hub address.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where the Hub is and how to talk to it, from the environment as
/// `huggingface_hub` reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, without a trailing slash (default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` writes
    /// (`HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// The cache directory: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`),
    /// else `$HF_HOME/hub`; `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`,
    /// else `~/.cache/huggingface`.
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE` set to 1/true/yes/on: never touch the network.
    pub offline: bool,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .finish()
    }
}

fn env_nonempty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

impl HubConfig {
    /// Reads `HF_ENDPOINT`, `HF_TOKEN` (or the token file), `HF_HUB_CACHE`,
    /// `HF_HOME` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        let hf_home = env_nonempty("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                env_nonempty("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".cache"))
                    .join("huggingface")
            });
        let cache = env_nonempty("HF_HUB_CACHE")
            .or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim()
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| {
                let path = env_nonempty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint,
            token,
            cache,
            offline,
        }
    }

    /// `<cache>/models--org--name`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache.join(repo_folder(repo))
    }
}

/// `models--org--name`, the cache folder of a repository.
fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Why a repository's files could not be had. Every message names the repository.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Not in the cache, and downloading is off (no `download` feature, or offline).
    #[error(
        "`hf = \"{repo}\"` (revision {revision}) is not in the Hugging Face cache at {}; {hint}",
        dir.display()
    )]
    NotCached {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The repository's cache folder.
        dir: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// The repository, the revision or a file does not exist (HTTP 404).
    #[error("Hugging Face repo `{repo}`: {what} was not found at {endpoint}{hint}")]
    NotFound {
        /// `org/name`.
        repo: String,
        /// What was not found.
        what: String,
        /// The Hub asked.
        endpoint: String,
        /// A hint, starting with "; " (or empty).
        hint: String,
    },
    /// A gated or private repository refused access (HTTP 401/403).
    #[error("Hugging Face repo `{repo}` refused access (HTTP {status}): {hint}")]
    Unauthorized {
        /// `org/name`.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// What to do about it (set `HF_TOKEN`, accept the terms).
        hint: String,
    },
    /// The Hub could not be reached, or answered with a server error.
    #[error("Hugging Face repo `{repo}`: cannot reach {endpoint}: {message}")]
    Network {
        /// `org/name`.
        repo: String,
        /// The Hub asked.
        endpoint: String,
        /// The transport's error or the HTTP status.
        message: String,
    },
    /// A transfer stopped before all its bytes arrived; the partial file is kept
    /// as `<file>.incomplete` and the next run resumes it.
    #[error(
        "Hugging Face repo `{repo}`: download of {file} interrupted after {done} of {} bytes ({message}); run again to resume",
        total.map_or_else(|| "?".to_string(), |t| t.to_string())
    )]
    Interrupted {
        /// `org/name`.
        repo: String,
        /// The file in the repository.
        file: String,
        /// Bytes on disk.
        done: u64,
        /// Bytes expected, when the server said.
        total: Option<u64>,
        /// What stopped it.
        message: String,
    },
    /// The Hub answered something gllm cannot use (no weights, a bad listing, an
    /// unexpected status).
    #[error("Hugging Face repo `{repo}`: {message}")]
    Invalid {
        /// `org/name`.
        repo: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing the cache failed.
    #[error("Hugging Face repo `{repo}`: {}: {source}", path.display())]
    Io {
        /// `org/name`.
        repo: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Progress of one file's download, given to the handler of [`set_progress_handler`].
///
/// For each file that is downloaded (files already cached are not reported), the
/// handler sees a first event with `done` = the bytes already on disk (0, or the
/// part of an interrupted download that is resumed), events as bytes arrive, and
/// a last one with `finished = true`. A download that fails ends without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress<'a> {
    /// `org/name`.
    pub repo: &'a str,
    /// The file's path in the repository, e.g. `model.safetensors`.
    pub file: &'a str,
    /// Bytes of this file received so far.
    pub done: u64,
    /// The file's size, when the server said.
    pub total: Option<u64>,
    /// All bytes are there and the file is in its place.
    pub finished: bool,
}

/// A download progress handler. It is called on the thread that downloads
/// (a model loader), often: keep it cheap.
pub type ProgressHandler = Arc<dyn Fn(&DownloadProgress<'_>) + Send + Sync>;

static PROGRESS: RwLock<Option<ProgressHandler>> = RwLock::new(None);

/// Installs the process-wide download progress handler (`None` removes it).
/// The CLI turns these events into progress bars; without a handler, downloads
/// are silent. Has no effect on builds without the `download` feature.
pub fn set_progress_handler(handler: Option<ProgressHandler>) {
    match PROGRESS.write() {
        Ok(mut h) => *h = handler,
        Err(poisoned) => *poisoned.into_inner() = handler,
    }
}

#[cfg_attr(not(feature = "download"), allow(dead_code))]
fn report(progress: &DownloadProgress<'_>) {
    let handler = match PROGRESS.read() {
        Ok(h) => h.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    if let Some(h) = handler {
        h(progress);
    }
}

/// The files of a repository that gllm reads, besides the weights and the
/// modules named by `modules.json`: what [`resolve`] downloads when present.
pub const SIDE_FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// Which files of a repository listing gllm reads, in download order, when the
/// manifest names no `file`: [`SIDE_FILES`], then `model.safetensors` or
/// `model.safetensors.index.json` (its shards are added once the index is read,
/// and the files of the sentence-transformers modules once `modules.json` is).
/// An error says what the repository lacks (and names its .gguf files, which
/// need `file = "..."`).
pub fn needed_files(repo: &str, siblings: &[String]) -> Result<Vec<String>, HubError> {
    let has = |f: &str| siblings.iter().any(|s| s == f);
    let ggufs = gguf_files(siblings);
    if !has("config.json") {
        let message = if ggufs.is_empty() {
            "has no config.json: not a transformers model that gllm can load".to_string()
        } else {
            format!(
                "has no config.json but GGUF files: name one in the manifest with `file`, e.g. `file = \"{}\"` (the repo has {})",
                ggufs[0],
                ggufs.join(", ")
            )
        };
        return Err(HubError::Invalid {
            repo: repo.to_string(),
            message,
        });
    }
    let mut files: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    if has("model.safetensors") {
        files.push("model.safetensors".into());
    } else if has("model.safetensors.index.json") {
        files.push("model.safetensors.index.json".into());
    } else {
        let mut message =
            "has neither model.safetensors nor model.safetensors.index.json (gllm reads safetensors weights)"
                .to_string();
        if !ggufs.is_empty() {
            message.push_str(&format!(
                "; to use one of its GGUF files name it with `file`, e.g. `file = \"{}\"`",
                ggufs[0]
            ));
        }
        return Err(HubError::Invalid {
            repo: repo.to_string(),
            message,
        });
    }
    Ok(files)
}

fn gguf_files(siblings: &[String]) -> Vec<String> {
    siblings
        .iter()
        .filter(|s| crate::model_files::is_gguf_name(Path::new(s)))
        .cloned()
        .collect()
}

/// A relative path made of plain components only (no `..`, no root, no `\`):
/// safe to join to a snapshot directory.
fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A full 40-hex-digit commit id.
#[cfg_attr(not(feature = "download"), allow(dead_code))]
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The snapshot directory a revision resolves to in the cache (following
/// `refs/<revision>`), if it exists; with `file`, that file in it.
fn cached(cfg: &HubConfig, repo: &str, revision: &str, file: Option<&str>) -> Option<PathBuf> {
    let root = cfg.repo_dir(repo);
    let commit = match std::fs::read_to_string(root.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    if !is_safe_relative(&commit) {
        return None;
    }
    let snap = root.join("snapshots").join(&commit);
    match file {
        Some(f) => Some(snap.join(f)).filter(|p| p.is_file()),
        None => Some(snap).filter(|p| p.is_dir()),
    }
}

/// A cached snapshot holds config.json and all its safetensors weights.
#[cfg_attr(not(feature = "download"), allow(dead_code))]
fn snapshot_complete(dir: &Path) -> bool {
    if !dir.join("config.json").is_file() {
        return false;
    }
    if dir.join("model.safetensors").is_file() {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return false;
    };
    match shard_names(&text) {
        Some(shards) => shards.iter().all(|s| dir.join(s).is_file()),
        None => false,
    }
}

/// The shard file names of a `model.safetensors.index.json` (its `weight_map`
/// values, each once, in order); `None` if it is not such an index.
fn shard_names(index_json: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(index_json).ok()?;
    let map = v.get("weight_map")?.as_object()?;
    let mut out: Vec<String> = Vec::new();
    for name in map.values() {
        let name = name.as_str()?.to_string();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Some(out)
}

/// The local path of a model named by a Hugging Face repository: the snapshot
/// directory, or with `file` (a .gguf file in the repository) that file.
/// Reads the configuration from the environment ([`HubConfig::from_env`]).
pub fn resolve(repo: &str, revision: &str, file: Option<&str>) -> Result<PathBuf, HubError> {
    resolve_with(&HubConfig::from_env(), repo, revision, file)
}

/// [`resolve`] with an explicit configuration.
pub fn resolve_with(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    file: Option<&str>,
) -> Result<PathBuf, HubError> {
    if !is_safe_relative(revision) {
        return Err(HubError::Invalid {
            repo: repo.to_string(),
            message: format!("revision `{revision}` is not a valid branch, tag or commit"),
        });
    }
    if let Some(f) = file
        && !is_safe_relative(f)
    {
        return Err(HubError::Invalid {
            repo: repo.to_string(),
            message: format!("`file = \"{f}\"` is not a relative path inside the repository"),
        });
    }
    #[cfg(feature = "download")]
    if !cfg.offline {
        // A commit's files never change: a complete cached snapshot needs no network.
        if is_commit(revision)
            && let Some(p) = cached(cfg, repo, revision, file)
            && (file.is_some() || snapshot_complete(&p))
        {
            return Ok(p);
        }
        return match download::fetch(cfg, repo, revision, file) {
            Ok(p) => Ok(p),
            // The Hub is out of reach: use what the cache has, as huggingface_hub does.
            Err(e @ HubError::Network { .. }) => cached(cfg, repo, revision, file).ok_or(e),
            Err(e) => Err(e),
        };
    }
    cached(cfg, repo, revision, file).ok_or_else(|| {
        let what = match file {
            Some(f) => format!("`huggingface-cli download {repo} {f}`"),
            None => format!("`huggingface-cli download {repo}`"),
        };
        let hint = if DOWNLOAD_ENABLED {
            format!(
                "HF_HUB_OFFLINE is set, so gllm does not download it: unset HF_HUB_OFFLINE, or download it first (e.g. {what}), or use `path`"
            )
        } else {
            format!(
                "download it first (e.g. {what}), or build gllm with `--features download`, or use `path`"
            )
        };
        HubError::NotCached {
            repo: repo.to_string(),
            revision: revision.to_string(),
            dir: cfg.repo_dir(repo),
            hint,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_stay_inside_the_snapshot() {
        assert!(is_safe_relative("config.json"));
        assert!(is_safe_relative("1_Pooling/config.json"));
        assert!(is_safe_relative("refs/pr/1"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a\\b",
            "./a",
            "a/",
        ] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }

    #[test]
    fn needed_files_pick_what_gllm_reads() {
        let listing: Vec<String> = [
            "README.md",
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "modules.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            needed_files("o/n", &listing).unwrap(),
            vec![
                "config.json",
                "tokenizer.json",
                "modules.json",
                "model.safetensors"
            ]
        );
        let sharded: Vec<String> = ["config.json", "model.safetensors.index.json"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            needed_files("o/n", &sharded).unwrap(),
            vec!["config.json", "model.safetensors.index.json"]
        );
        let gguf: Vec<String> = ["README.md", "m-q4_0.gguf", "m-q8_0.gguf"]
            .map(String::from)
            .to_vec();
        let err = needed_files("o/n", &gguf).unwrap_err().to_string();
        assert!(err.contains("`o/n`"), "{err}");
        assert!(err.contains("file = \"m-q4_0.gguf\""), "{err}");
        assert!(err.contains("m-q8_0.gguf"), "{err}");
        let bin: Vec<String> = ["config.json", "pytorch_model.bin"]
            .map(String::from)
            .to_vec();
        let err = needed_files("o/n", &bin).unwrap_err().to_string();
        assert!(err.contains("neither model.safetensors"), "{err}");
    }

    #[test]
    fn the_cache_alone_follows_refs_and_says_how_to_download() {
        let dir = std::env::temp_dir().join(format!("gllm-hub-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = HubConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            cache: dir.clone(),
            offline: true,
        };
        let err = resolve_with(&cfg, "org/name", "main", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`hf = \"org/name\"` (revision main) is not in the Hugging Face cache"),
            "{err}"
        );
        assert!(err.contains("`huggingface-cli download org/name`"), "{err}");
        if DOWNLOAD_ENABLED {
            assert!(err.contains("unset HF_HUB_OFFLINE"), "{err}");
        } else {
            assert!(
                err.contains("or build gllm with `--features download`"),
                "{err}"
            );
        }

        let commit = "0123456789abcdef0123456789abcdef01234567";
        let root = dir.join("models--org--name");
        let snap = root.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), format!("{commit}\n")).unwrap();
        assert_eq!(resolve_with(&cfg, "org/name", "main", None).unwrap(), snap);
        assert_eq!(resolve_with(&cfg, "org/name", commit, None).unwrap(), snap);
        let err = resolve_with(&cfg, "org/name", "main", Some("m-q4_0.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`huggingface-cli download org/name m-q4_0.gguf`"),
            "{err}"
        );
        std::fs::write(snap.join("m-q4_0.gguf"), b"GGUF").unwrap();
        assert_eq!(
            resolve_with(&cfg, "org/name", "main", Some("m-q4_0.gguf")).unwrap(),
            snap.join("m-q4_0.gguf")
        );
        let err = resolve_with(&cfg, "org/name", "../main", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`org/name`") && err.contains("revision `../main`"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shard_names_come_from_the_weight_map_once_each() {
        let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            shard_names(index).unwrap(),
            vec![
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert!(shard_names("{}").is_none());
    }
}
