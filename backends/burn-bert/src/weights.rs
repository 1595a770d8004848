//! Strict reading of safetensors checkpoints (one file or a sharded index).
//!
//! Every tensor the model takes is checked by name and shape; whatever is
//! missing, mis-shaped, of an unreadable dtype or left over is collected and
//! reported together as one invalid-model error naming each tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gllm_api::BackendError;
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

/// One tensor's place in the loaded files.
struct Entry {
    file: usize,
    /// Offset of the data section in the file (8 + header length).
    data_start: usize,
    info: TensorInfo,
}

/// The tensors of a checkpoint, read from disk, with a record of what was taken.
pub struct WeightStore {
    files: Vec<(PathBuf, Vec<u8>)>,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    problems: Vec<String>,
}

/// A tensor converted to f32, with its shape.
pub struct Loaded {
    /// Row-major values.
    pub data: Vec<f32>,
    /// Shape as stored.
    pub shape: Vec<usize>,
}

fn bad(message: String) -> BackendError {
    BackendError::invalid_model(message)
}

impl WeightStore {
    /// Opens `model.safetensors.index.json` (sharded) or `model.safetensors` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths = if index.is_file() {
            shard_paths(dir, &index)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(bad(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut store = WeightStore {
            files: Vec::new(),
            entries: BTreeMap::new(),
            taken: BTreeSet::new(),
            problems: Vec::new(),
        };
        for path in paths {
            let bytes = std::fs::read(&path)
                .map_err(|e| bad(format!("{}: cannot read: {e}", path.display())))?;
            store.add_file(path, bytes)?;
        }
        Ok(store)
    }

    /// Adds one safetensors file held in memory.
    pub fn add_file(&mut self, path: PathBuf, bytes: Vec<u8>) -> Result<(), BackendError> {
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            bad(format!(
                "{}: not a valid safetensors file (truncated or corrupt, {} bytes): {e}",
                path.display(),
                bytes.len()
            ))
        })?;
        let file = self.files.len();
        for (name, info) in metadata.tensors() {
            if self.entries.contains_key(&name) {
                return Err(bad(format!(
                    "{}: tensor `{name}` appears in more than one file",
                    path.display()
                )));
            }
            self.entries.insert(
                name,
                Entry {
                    file,
                    data_start: 8 + header_len,
                    info: info.clone(),
                },
            );
        }
        self.files.push((path, bytes));
        Ok(())
    }

    /// True when the checkpoint holds a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.info.shape.as_slice())
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Takes a tensor that must exist with exactly `shape`, as f32. A problem
    /// is recorded (and `None` returned) when it does not.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Option<Loaded> {
        let Some(entry) = self.entries.get(name) else {
            self.problems.push(format!(
                "missing tensor `{name}` (expected shape {shape:?})"
            ));
            return None;
        };
        self.taken.insert(name.to_string());
        if entry.info.shape != shape {
            self.problems.push(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                entry.info.shape
            ));
            return None;
        }
        let (path, bytes) = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let raw = &bytes[entry.data_start + start..entry.data_start + end];
        let data: Vec<f32> = match entry.info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                self.problems.push(format!(
                    "tensor `{name}` in {} has dtype {other:?} (F32, F16 or BF16 expected)",
                    path.display()
                ));
                return None;
            }
        };
        Some(Loaded {
            data,
            shape: shape.to_vec(),
        })
    }

    /// Marks a tensor as known and unused (a buffer, an unused head), if present.
    pub fn ignore(&mut self, name: &str) {
        if self.entries.contains_key(name) {
            self.taken.insert(name.to_string());
        }
    }

    /// Records a problem found by the model builder.
    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// Ends loading: an error listing every missing, mis-shaped and unexpected tensor, if any.
    pub fn finish(self, what: &Path) -> Result<(), BackendError> {
        let mut problems = self.problems;
        for name in self.entries.keys() {
            if !self.taken.contains(name) {
                let shape = &self.entries[name].info.shape;
                problems.push(format!("unexpected tensor `{name}` (shape {shape:?})"));
            }
        }
        const SHOWN: usize = 12;
        match problems.len() {
            0 => Ok(()),
            n => {
                let mut message = problems[..n.min(SHOWN)].join("; ");
                if n > SHOWN {
                    message.push_str(&format!("; … and {} more", n - SHOWN));
                }
                Err(bad(format!("{}: {message}", what.display())))
            }
        }
    }
}

/// The shard files named by a `model.safetensors.index.json`, each once, in order.
fn shard_paths(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| bad(format!("{}: cannot read: {e}", index.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not valid JSON: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(format!("{}: no `weight_map` object", index.display())))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            bad(format!(
                "{}: weight_map entry `{name}` is not a file name",
                index.display()
            ))
        })?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(format!(
                "{}: shard name `{file}` is not a plain file name",
                index.display()
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}
