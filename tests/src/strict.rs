//! Edited copies of safetensors models for the strict-loading tests of every
//! backend: a tensor removed, renamed, mis-shaped or added, a file cut short,
//! the weights converted to another float dtype or split into shards, a
//! config key changed. Each backend's tests keep their own cases and
//! assertions; only the file editing lives here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gllm_api::{BackendError, ErrorKind};
use safetensors::tensor::TensorView;
use safetensors::{SafeTensors, serialize_to_file};

pub use safetensors::Dtype;

/// One tensor of a safetensors file, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    /// Its name in the file.
    pub name: String,
    /// Its dtype on disk.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its little-endian bytes.
    pub data: Vec<u8>,
}

impl StoredTensor {
    /// The same values in `dtype` (F32, F16 or BF16, from any of those).
    pub fn to_dtype(&self, dtype: Dtype) -> Result<Self> {
        let values: Vec<f32> = match self.dtype {
            Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => bail!("tensor `{}`: cannot convert from {other:?}", self.name),
        };
        let data = match dtype {
            Dtype::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            other => bail!("tensor `{}`: cannot convert to {other:?}", self.name),
        };
        Ok(Self {
            dtype,
            data,
            ..self.clone()
        })
    }
}

/// A fresh, empty directory for one test: `<temp>/gllm-strict/<tag>` (whatever
/// an earlier run left there is removed, so runs do not pile up copies of models;
/// tags name the backend and the case, so tests running at once never share one).
pub fn scratch_dir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("gllm-strict").join(tag);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A fresh [`scratch_dir`] holding copies of `files` (paths relative to
/// `src`, subdirectories created as needed): a model's configuration
/// without its weights.
pub fn scratch_copy(tag: &str, src: &Path, files: &[&str]) -> Result<PathBuf> {
    let dir = scratch_dir(tag)?;
    for file in files {
        let to = dir.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(src.join(file), &to)
            .with_context(|| format!("copying {} to {}", src.join(file).display(), to.display()))?;
    }
    Ok(dir)
}

/// The tensors of the safetensors file at `path`, sorted by name.
pub fn read_tensors(path: &Path) -> Result<Vec<StoredTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut tensors: Vec<StoredTensor> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| StoredTensor {
            name,
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data: t.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// Writes `tensors` as the safetensors file `path`. Each tensor's bytes must
/// fit its dtype and shape (cut the bytes when shrinking a shape).
pub fn write_tensors(path: &Path, tensors: &[StoredTensor]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (t.name.clone(), v))
                .with_context(|| format!("tensor `{}` {:?} {:?}", t.name, t.dtype, t.shape))
        })
        .collect::<Result<Vec<_>>>()?;
    serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))
}

/// Writes `shards` into `dir` as `model-0000i-of-0000n.safetensors` with the
/// `model.safetensors.index.json` that maps each tensor to its shard.
pub fn write_sharded(dir: &Path, shards: &[&[StoredTensor]]) -> Result<()> {
    let mut map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len());
        write_tensors(&dir.join(&file), shard)?;
        for t in *shard {
            map.insert(t.name.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(&path, index.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// Writes the file `src` without its last `cut` bytes to `dst` (a truncated
/// download).
pub fn write_truncated(src: &Path, dst: &Path, cut: usize) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let keep = bytes
        .len()
        .checked_sub(cut)
        .with_context(|| format!("{} has fewer than {cut} bytes", src.display()))?;
    std::fs::write(dst, &bytes[..keep]).with_context(|| format!("writing {}", dst.display()))
}

/// Sets `key` of the JSON object in the file `path` (a `config.json`) to `value`.
pub fn set_json_key(path: &Path, key: &str, value: serde_json::Value) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let object = json
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    object.insert(key.to_string(), value);
    std::fs::write(path, json.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// One change to a checkpoint's list of tensors.
#[derive(Debug, Clone, Copy)]
pub enum Edit {
    /// Drop the tensor of that name.
    Remove(&'static str),
    /// Give the tensor of the first name the second.
    Rename(&'static str, &'static str),
    /// Keep only the first half of the first dimension of the named tensor.
    Shrink(&'static str),
    /// Add a tensor of that name, a copy of the last one.
    Add(&'static str),
}

impl Edit {
    /// Applies the edit to `(name, shape, payload)` tensors of any format;
    /// `shrink` cuts a payload down to the (already halved) shape it is given.
    pub fn apply<T: Clone>(
        &self,
        tensors: &mut Vec<(String, Vec<usize>, T)>,
        shrink: impl Fn(&T, &[usize]) -> Result<T>,
    ) -> Result<()> {
        match *self {
            Edit::Remove(n) => tensors.retain(|(name, _, _)| name != n),
            Edit::Rename(from, to) => {
                for t in tensors.iter_mut().filter(|t| t.0 == from) {
                    t.0 = to.to_string();
                }
            }
            Edit::Shrink(n) => {
                for t in tensors.iter_mut().filter(|t| t.0 == n) {
                    let first =
                        t.1.first_mut()
                            .with_context(|| format!("`{n}` is a scalar"))?;
                    *first /= 2;
                    t.2 = shrink(&t.2, &t.1)?;
                }
            }
            Edit::Add(n) => {
                let last = tensors.last().cloned().context("no tensor to copy")?;
                tensors.push((n.to_string(), last.1, last.2));
            }
        }
        Ok(())
    }

    /// Applies the edit to safetensors tensors (a shrunk tensor keeps the
    /// leading bytes its new shape needs).
    pub fn apply_to(&self, tensors: Vec<StoredTensor>) -> Result<Vec<StoredTensor>> {
        let mut list: Vec<_> = tensors
            .into_iter()
            .map(|t| (t.name, t.shape, (t.dtype, t.data)))
            .collect();
        self.apply(&mut list, |(dtype, data), shape| {
            let len = shape.iter().product::<usize>() * dtype.bitsize() / 8;
            let kept = data.get(..len).context("shrinking past the data")?;
            Ok((*dtype, kept.to_vec()))
        })?;
        Ok(list
            .into_iter()
            .map(|(name, shape, (dtype, data))| StoredTensor {
                name,
                dtype,
                shape,
                data,
            })
            .collect())
    }
}

/// Writes the tensors of the safetensors file `src`, changed by each of
/// `edits` in turn, as the safetensors file `dst`.
pub fn write_edited(src: &Path, dst: &Path, edits: &[Edit]) -> Result<()> {
    let mut tensors = read_tensors(src)?;
    for edit in edits {
        tensors = edit.apply_to(tensors)?;
    }
    write_tensors(dst, &tensors)
}

/// A fresh [`scratch_copy`] of `files` of the model directory `src`, with
/// `src`'s `model.safetensors` changed by `edits`.
pub fn edited_model(tag: &str, src: &Path, files: &[&str], edits: &[Edit]) -> Result<PathBuf> {
    let dir = scratch_copy(tag, src, files)?;
    let weights = "model.safetensors";
    write_edited(&src.join(weights), &dir.join(weights), edits)?;
    Ok(dir)
}

/// The error of a load that must fail: `what` (a path, for the message) loaded
/// is an error of the test.
pub fn load_error<T>(result: Result<T, BackendError>, what: &Path) -> Result<BackendError> {
    match result {
        Ok(_) => bail!("loading {} succeeded", what.display()),
        Err(e) => Ok(e),
    }
}

/// Fails unless `e` is an invalid-model error whose message contains every
/// one of `needles`.
pub fn assert_invalid_model(e: &BackendError, needles: &[&str]) {
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    for n in needles {
        assert!(e.message.contains(n), "message lacks {n:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, values: &[f32]) -> StoredTensor {
        StoredTensor {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape: vec![values.len()],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn converts_between_float_dtypes() -> Result<()> {
        let t = tensor("a", &[1.5, -2.0, 0.25]);
        for dtype in [Dtype::F16, Dtype::BF16] {
            let h = t.to_dtype(dtype)?;
            assert_eq!((h.dtype, h.data.len()), (dtype, 6));
            assert_eq!(h.to_dtype(Dtype::F32)?, t);
        }
        assert!(t.to_dtype(Dtype::I32).is_err());
        Ok(())
    }

    #[test]
    fn edits_write_and_read_back() -> Result<()> {
        let dir = scratch_dir("testkit-edits")?;
        let tensors = vec![tensor("a", &[1.0, 2.0]), tensor("b", &[3.0, 4.0, 5.0, 6.0])];
        let path = dir.join("model.safetensors");
        let edited = Edit::Shrink("b").apply_to(tensors.clone())?;
        let edited = Edit::Rename("a", "c").apply_to(edited)?;
        let edited = Edit::Add("d").apply_to(edited)?;
        let edited = Edit::Remove("d").apply_to(edited)?;
        write_tensors(&path, &edited)?;
        let back = read_tensors(&path)?;
        assert_eq!(
            back,
            vec![tensor("b", &[3.0, 4.0]), tensor("c", &[1.0, 2.0])]
        );
        assert!(Edit::Add("x").apply_to(Vec::new()).is_err());

        write_sharded(&dir, &[&tensors[..1], &tensors[1..]])?;
        assert_eq!(
            read_tensors(&dir.join("model-00002-of-00002.safetensors"))?,
            tensors[1..]
        );
        let index = crate::read_json(&dir.join("model.safetensors.index.json"))?;
        assert_eq!(index["weight_map"]["a"], "model-00001-of-00002.safetensors");

        write_truncated(&path, &dir.join("cut.safetensors"), 10)?;
        assert!(read_tensors(&dir.join("cut.safetensors")).is_err());
        assert!(write_truncated(&path, &dir.join("x"), 1 << 20).is_err());

        std::fs::write(dir.join("config.json"), r#"{"a": 1}"#)?;
        set_json_key(&dir.join("config.json"), "b", 2.into())?;
        let copy = scratch_copy("testkit-copy", &dir, &["config.json"])?;
        assert_eq!(crate::read_json(&copy.join("config.json"))?["b"], 2);
        let edited = edited_model(
            "testkit-edited",
            &dir,
            &["config.json"],
            &[Edit::Remove("b")],
        )?;
        assert_eq!(
            read_tensors(&edited.join("model.safetensors"))?,
            vec![tensor("c", &[1.0, 2.0])]
        );
        assert!(edited.join("config.json").is_file());
        Ok(())
    }

    #[test]
    fn load_errors_are_checked() -> Result<()> {
        let e = load_error::<()>(
            Err(BackendError::invalid_model("m: missing tensor `x`")),
            Path::new("m"),
        )?;
        assert_invalid_model(&e, &["missing tensor `x`"]);
        assert!(load_error(Ok(()), Path::new("m")).is_err());
        Ok(())
    }
}
