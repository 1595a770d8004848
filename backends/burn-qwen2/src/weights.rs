//! Strict reading of safetensors checkpoints (one file or a sharded index).
//!
//! Files are memory-mapped. Every tensor the decoder takes is checked by name
//! and shape; whatever is missing, mis-shaped, of an unreadable dtype or left
//! over is collected and reported together as one invalid-model error naming
//! each tensor and its shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use gllm_api::BackendError;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

/// One tensor's place in the mapped files.
struct Entry {
    file: usize,
    /// Offset of the data section in the file (8 + header length).
    data_start: usize,
    info: TensorInfo,
}

/// The tensors of a checkpoint, with a record of what was taken.
pub struct WeightStore {
    files: Vec<(PathBuf, Mmap)>,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    problems: Vec<String>,
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
            let file = File::open(&path)
                .map_err(|e| bad(format!("{}: cannot open: {e}", path.display())))?;
            // SAFETY: the map is read-only and private to this process; a file changed
            // underneath while loading gives wrong numbers, not undefined behaviour in
            // safe code beyond what reading it would.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| bad(format!("{}: cannot map: {e}", path.display())))?;
            store.add_file(path, map)?;
        }
        Ok(store)
    }

    fn add_file(&mut self, path: PathBuf, map: Mmap) -> Result<(), BackendError> {
        let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| {
            bad(format!(
                "{}: not a valid safetensors file (truncated or corrupt, {} bytes): {e}",
                path.display(),
                map.len()
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
        self.files.push((path, map));
        Ok(())
    }

    /// True when the checkpoint holds a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored dtype of the first floating-point tensor (what the checkpoint is "in").
    pub fn stored_dtype(&self) -> Option<Dtype> {
        self.entries.values().map(|e| e.info.dtype).next()
    }

    /// Takes a tensor that must exist with exactly `shape`, as f32 values. A
    /// problem is recorded (and `None` returned) when it does not.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
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
        let (path, map) = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let Some(raw) = map.get(entry.data_start + start..entry.data_start + end) else {
            self.problems.push(format!(
                "tensor `{name}` lies outside {} (truncated file)",
                path.display()
            ));
            return None;
        };
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
        let want: usize = shape.iter().product();
        if data.len() != want {
            self.problems.push(format!(
                "tensor `{name}` holds {} values, its shape {shape:?} needs {want}",
                data.len()
            ));
            return None;
        }
        Some(data)
    }

    /// Marks a tensor as known and unused, if present, after checking its shape.
    pub fn ignore(&mut self, name: &str, shape: &[usize]) {
        if let Some(entry) = self.entries.get(name) {
            self.taken.insert(name.to_string());
            if entry.info.shape != shape {
                self.problems.push(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    entry.info.shape
                ));
            }
        }
    }

    /// Ends loading: an error listing every missing, mis-shaped and unexpected tensor, if any.
    pub fn finish(self, what: &Path) -> Result<(), BackendError> {
        let mut problems = self.problems;
        for (name, entry) in &self.entries {
            if !self.taken.contains(name) {
                problems.push(format!(
                    "unexpected tensor `{name}` (shape {:?})",
                    entry.info.shape
                ));
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
