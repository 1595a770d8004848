//! Strict reading of safetensors checkpoints (one file or a sharded index).
//!
//! Files are memory-mapped. Every tensor the model takes is checked by name
//! and shape; whatever is missing, mis-shaped, of an unreadable dtype or left
//! over is collected and reported together as one invalid-model error naming
//! each tensor and its shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use gllm_api::{BackendError, LoadProgress};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

/// The most problems one error lists (the rest are counted).
const SHOWN: usize = 12;

/// The bytes of one file: memory-mapped from disk, or handed over in memory.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

/// One tensor's place in the loaded files.
struct Entry {
    file: usize,
    /// Offset of the data section in the file (8 + header length).
    data_start: usize,
    info: TensorInfo,
}

impl Entry {
    /// The bytes of the tensor's data.
    fn bytes(&self) -> u64 {
        let (start, end) = self.info.data_offsets;
        end.saturating_sub(start) as u64
    }
}

/// The tensors of a checkpoint, with a record of what was taken.
#[derive(Default)]
pub struct WeightStore {
    files: Vec<(PathBuf, Bytes)>,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    problems: Vec<String>,
    progress: LoadProgress,
}

fn bad(message: String) -> BackendError {
    BackendError::invalid_model(message)
}

impl WeightStore {
    /// An empty store, to be filled with [`WeightStore::add_file`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `model.safetensors.index.json` (sharded) or `model.safetensors`
    /// in `dir`, memory-mapping each file.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths = if index.is_file() {
            gllm_arch::checkpoint::shard_paths(dir, &index)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(bad(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut store = Self::new();
        for path in paths {
            let file = File::open(&path)
                .map_err(|e| bad(format!("{}: cannot open: {e}", path.display())))?;
            // SAFETY: mapping is unsafe because the file can change under the map. The
            // contract: nothing writes or truncates the weight files while a model loads
            // (the map is dropped once the tensors are built). A file rewritten in place
            // gives wrong numbers that the strict checks do not see; a file truncated
            // underneath makes reads past its new end raise SIGBUS, which ends the process.
            // Hugging Face cache blobs and downloaded files are written once, never in place.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| bad(format!("{}: cannot map: {e}", path.display())))?;
            store.add(path, Bytes::Mapped(map))?;
        }
        Ok(store)
    }

    /// Adds one safetensors file held in memory (`path` is for messages).
    pub fn add_file(&mut self, path: PathBuf, bytes: Vec<u8>) -> Result<(), BackendError> {
        self.add(path, Bytes::Owned(bytes))
    }

    fn add(&mut self, path: PathBuf, bytes: Bytes) -> Result<(), BackendError> {
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

    /// Reports every tensor taken or ignored from now on to `progress`, whose total
    /// becomes the bytes of every tensor in the files.
    pub fn report_to(&mut self, progress: LoadProgress) {
        let total = self
            .entries
            .values()
            .map(Entry::bytes)
            .fold(0u64, u64::saturating_add);
        progress.set_total(total);
        self.progress = progress;
    }

    /// Marks `name` taken (once), reporting its bytes.
    fn mark_taken(&mut self, name: &str) {
        if let Some(entry) = self.entries.get(name)
            && self.taken.insert(name.to_string())
        {
            self.progress.advance(entry.bytes());
        }
    }

    /// True when the checkpoint holds a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.info.shape.as_slice())
    }

    /// Every tensor name in the checkpoint, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The stored dtype of the first tensor in name order (what the checkpoint
    /// is "in"), if there is any tensor.
    pub fn stored_dtype(&self) -> Option<Dtype> {
        self.entries.values().map(|e| e.info.dtype).next()
    }

    /// Takes a tensor that must exist with exactly `shape`, as row-major f32
    /// values (f16 and bf16 are widened, exactly). A problem is recorded (and
    /// `None` returned) when it does not.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let Some(entry) = self.entries.get(name) else {
            self.problems.push(format!(
                "missing tensor `{name}` (expected shape {shape:?})"
            ));
            return None;
        };
        let stored_shape = entry.info.shape.clone();
        self.mark_taken(name);
        let entry = self.entries.get(name)?;
        if stored_shape != shape {
            self.problems.push(format!(
                "tensor `{name}` has shape {stored_shape:?}, expected {shape:?}"
            ));
            return None;
        }
        let (path, bytes) = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let Some(raw) = bytes.get(entry.data_start + start..entry.data_start + end) else {
            self.problems.push(format!(
                "tensor `{name}` lies outside {} (truncated file)",
                path.display()
            ));
            return None;
        };
        let Some(data) = to_f32(entry.info.dtype, raw) else {
            self.problems.push(format!(
                "tensor `{name}` in {} has dtype {:?} (F32, F16 or BF16 expected)",
                path.display(),
                entry.info.dtype
            ));
            return None;
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

    /// Marks a tensor as known and unused (a buffer, an unused head), whatever
    /// its shape, if present.
    pub fn ignore(&mut self, name: &str) {
        self.mark_taken(name);
    }

    /// Marks a tensor as known and unused, if present, after checking that it
    /// has `shape` (a mis-shaped one is recorded as a problem).
    pub fn ignore_shaped(&mut self, name: &str, shape: &[usize]) {
        if let Some(stored) = self.entries.get(name).map(|e| e.info.shape.clone()) {
            self.mark_taken(name);
            if stored != shape {
                self.problems.push(format!(
                    "tensor `{name}` has shape {stored:?}, expected {shape:?}"
                ));
            }
        }
    }

    /// Records a problem found by the model builder.
    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// Ends loading: an invalid-model error about `what` listing every
    /// missing, mis-shaped and unexpected tensor, if any.
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

/// Little-endian `raw` of `dtype` as f32 values; `None` for a dtype that is
/// not F32, F16 or BF16.
fn to_f32(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
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
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gllm_api::ErrorKind;
    use safetensors::tensor::TensorView;

    /// A safetensors file of `(name, dtype, shape, bytes)` tensors, in memory.
    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                let view = TensorView::new(*d, s.clone(), b).expect("a consistent test tensor");
                (n.to_string(), view)
            })
            .collect();
        safetensors::serialize(views, None).expect("serializable test tensors")
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn store(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> WeightStore {
        let mut store = WeightStore::new();
        store
            .add_file(PathBuf::from("m.safetensors"), file(tensors))
            .expect("a valid file");
        store
    }

    fn problems(store: WeightStore) -> String {
        let e = store.finish(Path::new("m")).expect_err("problems");
        assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
        e.message
    }

    #[test]
    fn takes_each_float_dtype_as_f32() {
        let half: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let mut s = store(&[
            ("a", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
            ("b", Dtype::F16, vec![2], half),
            ("c", Dtype::BF16, vec![1, 2], bf),
        ]);
        assert!(s.contains("a") && !s.contains("d"));
        assert_eq!(s.shape("c"), Some(&[1, 2][..]));
        assert_eq!(s.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(s.stored_dtype(), Some(Dtype::F32));
        assert_eq!(s.take("a", &[2]), Some(vec![1.0, 2.0]));
        assert_eq!(s.take("b", &[2]), Some(vec![1.5, -2.0]));
        assert_eq!(s.take("c", &[1, 2]), Some(vec![0.25, 3.0]));
        s.finish(Path::new("m")).expect("everything taken");
    }

    #[test]
    fn every_problem_is_named_in_one_error() {
        let mut s = store(&[
            ("shaped", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
            ("ints", Dtype::I32, vec![1], vec![0; 4]),
            ("left", Dtype::F32, vec![1], f32_bytes(&[1.0])),
        ]);
        assert_eq!(s.take("gone", &[3]), None);
        assert_eq!(s.take("shaped", &[3]), None);
        assert_eq!(s.take("ints", &[1]), None);
        s.problem("the builder's own".to_string());
        let m = problems(s);
        for needle in [
            "m: ",
            "missing tensor `gone` (expected shape [3])",
            "tensor `shaped` has shape [2], expected [3]",
            "tensor `ints` in m.safetensors has dtype I32",
            "the builder's own",
            "unexpected tensor `left` (shape [1])",
        ] {
            assert!(m.contains(needle), "`{needle}` not in {m}");
        }
    }

    #[test]
    fn ignored_tensors_are_not_unexpected() {
        let mut s = store(&[
            ("any", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
            ("checked", Dtype::F32, vec![1], f32_bytes(&[1.0])),
        ]);
        s.ignore("any");
        s.ignore("absent");
        s.ignore_shaped("checked", &[1]);
        s.ignore_shaped("absent", &[1]);
        s.finish(Path::new("m")).expect("all known");

        let mut s = store(&[("checked", Dtype::F32, vec![1], f32_bytes(&[1.0]))]);
        s.ignore_shaped("checked", &[2]);
        assert!(problems(s).contains("tensor `checked` has shape [1], expected [2]"));
    }

    #[test]
    fn long_lists_are_cut() {
        let mut s = WeightStore::new();
        for i in 0..15 {
            s.take(&format!("t{i}"), &[1]);
        }
        let m = problems(s);
        assert!(m.ends_with("; … and 3 more"), "{m}");
    }

    #[test]
    fn corrupt_and_duplicated_files_are_invalid() {
        let mut s = WeightStore::new();
        let e = s
            .add_file(PathBuf::from("x.safetensors"), vec![1, 2, 3])
            .expect_err("corrupt");
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert!(
            e.message
                .contains("x.safetensors: not a valid safetensors file")
        );

        let bytes = file(&[("a", Dtype::F32, vec![1], f32_bytes(&[1.0]))]);
        let mut s = WeightStore::new();
        s.add_file(PathBuf::from("1.safetensors"), bytes.clone())
            .expect("first");
        let e = s
            .add_file(PathBuf::from("2.safetensors"), bytes)
            .expect_err("twice");
        assert!(
            e.message
                .contains("tensor `a` appears in more than one file")
        );
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("burn-support-weights-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn opens_single_and_sharded_directories() {
        let dir = temp_dir("single");
        let one = file(&[("a", Dtype::F32, vec![1], f32_bytes(&[4.0]))]);
        std::fs::write(dir.join("model.safetensors"), &one).expect("write");
        let mut s = WeightStore::open(&dir).expect("opens");
        assert_eq!(s.take("a", &[1]), Some(vec![4.0]));
        s.finish(&dir).expect("complete");

        let dir = temp_dir("sharded");
        let two = file(&[("b", Dtype::F32, vec![1], f32_bytes(&[5.0]))]);
        std::fs::write(dir.join("s1.safetensors"), &one).expect("write");
        std::fs::write(dir.join("s2.safetensors"), &two).expect("write");
        let index = r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#;
        std::fs::write(dir.join("model.safetensors.index.json"), index).expect("write");
        let mut s = WeightStore::open(&dir).expect("opens");
        assert_eq!(s.take("a", &[1]), Some(vec![4.0]));
        assert_eq!(s.take("b", &[1]), Some(vec![5.0]));
        s.finish(&dir).expect("complete");
    }

    #[test]
    fn bad_directories_and_indexes_are_invalid() {
        let dir = temp_dir("bad");
        let message = |dir: &Path| match WeightStore::open(dir) {
            Ok(_) => panic!("{} opened", dir.display()),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
                e.message
            }
        };
        assert!(message(&dir).contains("no model.safetensors"));
        let index = dir.join("model.safetensors.index.json");
        for (text, needle) in [
            ("{ nope", "not valid JSON"),
            ("{}", "no `weight_map` object"),
            (r#"{"weight_map": {"a": 1}}"#, "`a` is not a file name"),
            (
                r#"{"weight_map": {"a": "../x.safetensors"}}"#,
                "not a plain file name",
            ),
            (
                r#"{"weight_map": {"a": "absent.safetensors"}}"#,
                "cannot open",
            ),
        ] {
            std::fs::write(&index, text).expect("write");
            let m = message(&dir);
            assert!(m.contains(needle), "`{needle}` not in {m}");
        }
    }
}
