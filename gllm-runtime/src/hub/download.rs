//! Downloading from the Hub (the `download` feature): resolve a revision to a
//! commit, then fetch the files gllm reads into the cache.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use ureq::Agent;
use ureq::http::{Response, StatusCode};

use super::{
    DownloadProgress, HubConfig, HubError, is_commit, is_safe_relative, needed_files, repo_folder,
    report, shard_names,
};

/// Bytes read from the network between two progress events (and two writes).
const CHUNK: usize = 256 * 1024;

/// Resolves `revision` to a commit and makes sure the files gllm needs (or `file`)
/// are in `snapshots/<commit>/`; writes `refs/<revision>` last, so that a
/// revision only points at a snapshot whose files are all there.
pub(super) fn fetch(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    file: Option<&str>,
) -> Result<PathBuf, HubError> {
    let hub = Hub::new(cfg, repo);
    let (commit, siblings) = hub.revision_info(revision)?;
    let snap = cfg.repo_dir(repo).join("snapshots").join(&commit);
    let target = match file {
        Some(f) => {
            if !siblings.iter().any(|s| s == f) {
                let ggufs = super::gguf_files(&siblings);
                return Err(HubError::NotFound {
                    repo: repo.to_string(),
                    what: format!("file `{f}` (revision {revision})"),
                    endpoint: cfg.endpoint.clone(),
                    hint: if ggufs.is_empty() {
                        "; the repo has no .gguf file".to_string()
                    } else {
                        format!("; its .gguf files: {}", ggufs.join(", "))
                    },
                });
            }
            hub.download(&commit, f, &snap)?;
            snap.join(f)
        }
        None => {
            for f in needed_files(repo, &siblings)? {
                hub.download(&commit, &f, &snap)?;
                if f == "modules.json" {
                    for m in hub.module_files(&snap, &siblings)? {
                        hub.download(&commit, &m, &snap)?;
                    }
                }
                if f == "model.safetensors.index.json" {
                    for s in hub.shards(&snap.join(&f), &siblings)? {
                        hub.download(&commit, &s, &snap)?;
                    }
                }
            }
            snap
        }
    };
    if revision != commit {
        hub.write_ref(revision, &commit)?;
    }
    Ok(target)
}

struct Hub<'a> {
    cfg: &'a HubConfig,
    repo: &'a str,
    agent: Agent,
}

/// Percent-encodes `s` for a URL path, keeping `/` when `keep_slash`.
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header<'r, B>(resp: &'r Response<B>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(resp: &Response<ureq::Body>) -> Option<(u64, Option<u64>)> {
    let v = header(resp, "content-range")?.trim();
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

impl<'a> Hub<'a> {
    fn new(cfg: &'a HubConfig, repo: &'a str) -> Self {
        let read_timeout = std::env::var("HF_HUB_DOWNLOAD_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(60), Duration::from_secs_f64);
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("gllm/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(read_timeout))
            .build()
            .into();
        Self { cfg, repo, agent }
    }

    fn io_err(&self, path: &Path, source: std::io::Error) -> HubError {
        HubError::Io {
            repo: self.repo.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(&self, message: impl Into<String>) -> HubError {
        HubError::Invalid {
            repo: self.repo.to_string(),
            message: message.into(),
        }
    }

    fn get(&self, url: &str, range_from: u64) -> Result<Response<ureq::Body>, HubError> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.cfg.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        req.call().map_err(|e| HubError::Network {
            repo: self.repo.to_string(),
            endpoint: self.cfg.endpoint.clone(),
            message: e.to_string(),
        })
    }

    /// Turns an error status into a [`HubError`]; `what` names what was asked for.
    fn check(&self, resp: &Response<ureq::Body>, what: &str) -> Result<(), HubError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let code = header(resp, "x-error-code").unwrap_or("");
        let repo = self.repo.to_string();
        let endpoint = self.cfg.endpoint.clone();
        let token_hint = if self.cfg.token.is_some() {
            "; if it is private, check that HF_TOKEN has access to it"
        } else {
            "; if it is private or gated, set HF_TOKEN"
        };
        match status.as_u16() {
            // The Hub answers 401 RepoNotFound for a repo it will not show to this caller.
            401 | 404 if code == "RepoNotFound" => Err(HubError::NotFound {
                repo,
                what: "the repo".into(),
                endpoint,
                hint: token_hint.into(),
            }),
            404 => Err(HubError::NotFound {
                repo,
                what: match code {
                    "RevisionNotFound" | "EntryNotFound" => what.to_string(),
                    _ => format!("the repo or {what}"),
                },
                endpoint,
                hint: format!("{token_hint}, and check the name and the revision"),
            }),
            s @ (401 | 403) => {
                let page = format!("{}/{}", self.cfg.endpoint, self.repo);
                let hint = match (code, self.cfg.token.is_some()) {
                    ("GatedRepo", true) => format!(
                        "the repo is gated: accept its terms at {page} with the account of HF_TOKEN"
                    ),
                    ("GatedRepo", false) => format!(
                        "the repo is gated: accept its terms at {page}, then set HF_TOKEN to a token of that account"
                    ),
                    (_, true) => {
                        "HF_TOKEN was sent but gives no access to it (a gated or private repo): check the token and, for a gated repo, accept its terms".to_string()
                    }
                    (_, false) => {
                        "it is gated or private: set HF_TOKEN to a token with access (huggingface.co/settings/tokens)".to_string()
                    }
                };
                Err(HubError::Unauthorized {
                    repo,
                    status: s,
                    hint,
                })
            }
            s if status.is_server_error() || s == 429 => Err(HubError::Network {
                repo,
                endpoint,
                message: format!("HTTP {status} for {what}"),
            }),
            _ => Err(self.invalid(format!("HTTP {status} for {what}"))),
        }
    }

    /// `GET /api/models/{repo}/revision/{revision}`: the commit and the file list.
    fn revision_info(&self, revision: &str) -> Result<(String, Vec<String>), HubError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.cfg.endpoint,
            quote(self.repo, true),
            quote(revision, false)
        );
        let mut resp = self.get(&url, 0)?;
        self.check(&resp, &format!("revision `{revision}`"))?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| HubError::Network {
                repo: self.repo.to_string(),
                endpoint: self.cfg.endpoint.clone(),
                message: format!("reading {url}: {e}"),
            })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| self.invalid(format!("{url} did not answer JSON: {e}")))?;
        let sha = v
            .get("sha")
            .and_then(Value::as_str)
            .filter(|s| is_commit(s))
            .ok_or_else(|| self.invalid(format!("{url} gave no commit (`sha`)")))?
            .to_string();
        let siblings = v
            .get("siblings")
            .and_then(Value::as_array)
            .ok_or_else(|| self.invalid(format!("{url} gave no file list (`siblings`)")))?
            .iter()
            .filter_map(|s| s.get("rfilename").and_then(Value::as_str))
            .filter(|s| is_safe_relative(s))
            .map(str::to_string)
            .collect();
        Ok((sha, siblings))
    }

    /// The files of the sentence-transformers modules that `modules.json` names in
    /// sub-folders (e.g. `1_Pooling/config.json`): their .json files and weights.
    fn module_files(&self, snap: &Path, siblings: &[String]) -> Result<Vec<String>, HubError> {
        let path = snap.join("modules.json");
        let text = std::fs::read_to_string(&path).map_err(|e| self.io_err(&path, e))?;
        let modules: Value = serde_json::from_str(&text)
            .map_err(|e| self.invalid(format!("modules.json is not valid JSON: {e}")))?;
        let mut out = Vec::new();
        for m in modules.as_array().into_iter().flatten() {
            let Some(dir) = m.get("path").and_then(Value::as_str) else {
                continue;
            };
            let dir = dir.trim_end_matches('/');
            if dir.is_empty() || !is_safe_relative(dir) {
                continue; // the root's files are fetched anyway; burn-bert rejects the rest
            }
            let prefix = format!("{dir}/");
            for s in siblings {
                let Some(name) = s.strip_prefix(&prefix) else {
                    continue;
                };
                let wanted = name.ends_with(".json")
                    || name == "model.safetensors"
                    || name == "tokenizer.json";
                if wanted && !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        Ok(out)
    }

    /// The shards that a downloaded `model.safetensors.index.json` names, each
    /// checked against the listing.
    fn shards(&self, index: &Path, siblings: &[String]) -> Result<Vec<String>, HubError> {
        let text = std::fs::read_to_string(index).map_err(|e| self.io_err(index, e))?;
        let names = shard_names(&text).ok_or_else(|| {
            self.invalid("model.safetensors.index.json has no `weight_map` of file names")
        })?;
        names
            .into_iter()
            .map(|n| {
                if is_safe_relative(&n) && siblings.contains(&n) {
                    Ok(n)
                } else {
                    Err(self.invalid(format!(
                        "model.safetensors.index.json names {n}, which the repo does not have"
                    )))
                }
            })
            .collect()
    }

    /// Downloads `file` at `commit` into `snap/file` unless it is there:
    /// to `file.incomplete` (resumed when a previous run left one), renamed when complete.
    fn download(&self, commit: &str, file: &str, snap: &Path) -> Result<(), HubError> {
        let dest = snap.join(file);
        if dest.is_file() {
            return Ok(());
        }
        let parent = dest.parent().unwrap_or(snap);
        std::fs::create_dir_all(parent).map_err(|e| self.io_err(parent, e))?;

        // One writer per file, also across processes; the lock goes with `lock_file`.
        let locks = self.cfg.cache.join(".locks").join(repo_folder(self.repo));
        std::fs::create_dir_all(&locks).map_err(|e| self.io_err(&locks, e))?;
        let lock_path = locks.join(format!("{commit}.{}.lock", file.replace('/', "%2F")));
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io_err(&lock_path, e))?;
        lock_file.lock().map_err(|e| self.io_err(&lock_path, e))?;
        if dest.is_file() {
            return Ok(()); // another process finished it while we waited
        }

        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!("{name}.incomplete"));
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.cfg.endpoint,
            quote(self.repo, true),
            commit,
            quote(file, true)
        );
        let mut have = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        let mut resp = self.get(&url, have)?;
        if have > 0 && resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // The partial file is not a prefix the server knows: start over.
            have = 0;
            resp = self.get(&url, 0)?;
        }
        self.check(&resp, &format!("file `{file}` (commit {commit})"))?;

        let (mut out, start, total) = if resp.status() == StatusCode::PARTIAL_CONTENT {
            match content_range(&resp) {
                Some((start, total)) if start == have => {
                    let f = OpenOptions::new()
                        .append(true)
                        .open(&tmp)
                        .map_err(|e| self.io_err(&tmp, e))?;
                    (f, start, total)
                }
                _ => {
                    return Err(self.invalid(format!(
                        "{url} answered a range that does not start at byte {have}"
                    )));
                }
            }
        } else {
            let len = header(&resp, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
            let f = File::create(&tmp).map_err(|e| self.io_err(&tmp, e))?;
            (f, 0, len)
        };

        let mut done = start;
        let event = |done: u64, finished: bool| DownloadProgress {
            repo: self.repo,
            file,
            done,
            total,
            finished,
        };
        report(&event(done, false));
        let interrupted = |done: u64, message: String| HubError::Interrupted {
            repo: self.repo.to_string(),
            file: file.to_string(),
            done,
            total,
            message,
        };
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(interrupted(done, e.to_string())),
            };
            out.write_all(&buf[..n]).map_err(|e| self.io_err(&tmp, e))?;
            done += n as u64;
            report(&event(done, false));
        }
        if let Some(t) = total
            && done != t
        {
            return Err(interrupted(done, "the connection closed early".to_string()));
        }
        out.sync_all().map_err(|e| self.io_err(&tmp, e))?;
        drop(out);
        std::fs::rename(&tmp, &dest).map_err(|e| self.io_err(&dest, e))?;
        report(&event(done, true));
        Ok(())
    }

    /// `refs/<revision>` = `commit`, written whole (a temporary file renamed).
    fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        let path = self.cfg.repo_dir(self.repo).join("refs").join(revision);
        let parent = path.parent().unwrap_or(&self.cfg.cache);
        std::fs::create_dir_all(parent).map_err(|e| self.io_err(parent, e))?;
        let tmp = path.with_file_name(format!(
            "{}.{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        std::fs::write(&tmp, commit).map_err(|e| self.io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.io_err(&path, e))
    }
}
