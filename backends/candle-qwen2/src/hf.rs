//! Hugging Face model directories: `config.json` plus `model.safetensors` or the shards
//! listed in `model.safetensors.index.json` (f32, f16 or bf16 on disk).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use gllm_api::{DType, LoadProgress};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, internal, invalid_model};
use crate::kernels::HalfKind;
use crate::linear::Matrix;
use crate::loader::TensorSource;
use crate::model::Qwen2Model;
use gllm_arch::DecoderConfig;
use gllm_arch::schema::{HfNaming, Naming};

/// The safetensors files of a model directory.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok(gllm_arch::checkpoint::shard_paths(dir, &index)?);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(invalid_model(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

/// Memory-mapped safetensors files.
pub struct SafetensorsSource {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    /// Tensor name -> index into `maps` and the bytes of its data.
    routing: BTreeMap<String, (usize, u64)>,
    /// Store 16-bit weights in this format instead of the file's (requested dtype).
    half_override: Option<HalfKind>,
    /// Convert 16-bit weights to f32 (requested f32 on a GPU, where there is no half kernel).
    widen: bool,
    device: Device,
}

impl SafetensorsSource {
    /// Maps the files and indexes their tensors (a name in two files is invalid).
    pub fn open(files: &[PathBuf], dtype: Option<DType>, device: Device) -> Result<Self> {
        let mut maps = Vec::new();
        let mut routing = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f)
                .map_err(|e| invalid_model(format!("cannot open {}: {e}", f.display())))?;
            // SAFETY: the contract is burn-support's (`WeightStore::open`): nothing writes or
            // truncates the weight files while the model loads (the map is dropped after
            // loading); a file truncated underneath raises SIGBUS, which ends the process.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| invalid_model(format!("cannot map {}: {e}", f.display())))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| invalid_model(format!("bad safetensors {}: {e}", f.display())))?;
            for (name, view) in st.tensors() {
                let bytes = view.data().len() as u64;
                if routing.insert(name.clone(), (i, bytes)).is_some() {
                    return Err(invalid_model(format!(
                        "tensor `{name}` appears in more than one file"
                    )));
                }
            }
            maps.push((f.clone(), map));
        }
        let half_override = match dtype {
            Some(DType::Bf16) => Some(HalfKind::Bf16),
            Some(DType::F16) => Some(HalfKind::F16),
            Some(DType::F32) | None => None,
        };
        Ok(Self {
            maps,
            routing,
            half_override,
            widen: !device.is_cpu(),
            device,
        })
    }

    fn with_view<T>(
        &self,
        name: &str,
        f: impl FnOnce(Dtype, &[usize], &[u8]) -> Result<T>,
    ) -> Result<T> {
        let (i, _) = *self
            .routing
            .get(name)
            .ok_or_else(|| invalid_model(format!("missing tensor `{name}`")))?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map)
            .map_err(|e| invalid_model(format!("bad safetensors {}: {e}", path.display())))?;
        let view = st
            .tensor(name)
            .map_err(|e| invalid_model(format!("tensor `{name}`: {e}")))?;
        f(view.dtype(), view.shape(), view.data())
    }
}

fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(invalid_model(format!(
                "tensor `{name}` has dtype {other:?}; only f32, f16 and bf16 are supported"
            )));
        }
    })
}

impl TensorSource for SafetensorsSource {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let mut out = BTreeMap::new();
        for (_, map) in &self.maps {
            if let Ok(st) = SafeTensors::deserialize(map) {
                for (name, view) in st.tensors() {
                    out.insert(name, view.shape().to_vec());
                }
            }
        }
        out
    }

    fn matrix(&self, name: &str) -> Result<Matrix> {
        self.with_view(name, |dtype, shape, data| {
            let &[rows, cols] = shape else {
                return Err(invalid_model(format!(
                    "tensor `{name}` has shape {shape:?}, expected a matrix"
                )));
            };
            let file_half = match dtype {
                Dtype::BF16 => Some(HalfKind::Bf16),
                Dtype::F16 => Some(HalfKind::F16),
                _ => None,
            };
            let keep = match (self.half_override, file_half) {
                (Some(want), _) => Some(want),
                (None, Some(kind)) => Some(kind),
                (None, None) => None,
            };
            match keep {
                Some(kind) if !self.widen => {
                    let bits: Vec<u16> = if file_half == Some(kind) {
                        data.chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]]))
                            .collect()
                    } else {
                        to_f32(name, dtype, data)?
                            .into_iter()
                            .map(|v| kind.from_f32(v))
                            .collect()
                    };
                    Matrix::half(name, kind, rows, cols, &bits)
                }
                _ => {
                    let v = to_f32(name, dtype, data)?;
                    Ok(Matrix::F32(Tensor::from_vec(
                        v,
                        (rows, cols),
                        &self.device,
                    )?))
                }
            }
        })
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        self.with_view(name, |dtype, shape, data| {
            if shape.len() != 1 {
                return Err(invalid_model(format!(
                    "tensor `{name}` has shape {shape:?}, expected a vector"
                )));
            }
            Ok(Tensor::from_vec(
                to_f32(name, dtype, data)?,
                shape[0],
                &self.device,
            )?)
        })
    }

    fn byte_len(&self, name: &str) -> u64 {
        self.routing.get(name).map_or(0, |&(_, bytes)| bytes)
    }
}

/// Loads a model directory.
pub fn load_dir(
    dir: &Path,
    dtype: Option<DType>,
    device: Device,
    progress: &LoadProgress,
) -> Result<Qwen2Model> {
    if !dir.is_dir() {
        return Err(invalid_model(format!(
            "{} is not a model directory",
            dir.display()
        )));
    }
    let cfg = DecoderConfig::from_hf_file(&dir.join("config.json"))?;
    let files = weight_files(dir)?;
    let src = SafetensorsSource::open(&files, dtype, device.clone())?;
    let naming = Naming::Hf(HfNaming::detect(&src.shapes()));
    crate::loader::check_strict(&cfg, &src, naming)?;
    let model = crate::loader::build(cfg, &src, naming, device, progress)?;
    if model.layers.is_empty() {
        return Err(internal("model has no layers"));
    }
    Ok(model)
}
