//! GGUF files (llama.cpp) of architecture `qwen2`, `qwen3` or `llama`: config from the metadata,
//! tensors kept in their stored type (block-quantized, f16/bf16 or f32).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::io::Seek;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use crate::error::{Result, invalid_model, model_err};
use crate::linear::Matrix;
use crate::loader::TensorSource;
use crate::model::Qwen2Model;
use gllm_api::LoadProgress;
use gllm_arch::schema::Naming;
use gllm_arch::{DecoderConfig, GgufMetadata};
use gllm_kernels::{BlockType, HalfKind, QuantMatrix};

/// The metadata of a parsed GGUF header, as [`gllm_arch`] reads it.
struct Metadata<'a>(&'a Content);

impl GgufMetadata for Metadata<'_> {
    fn uint(&self, key: &str) -> Option<u64> {
        match self.0.metadata.get(key)? {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        }
    }

    fn float(&self, key: &str) -> Option<f64> {
        match self.0.metadata.get(key)? {
            Value::F32(x) => Some(f64::from(*x)),
            Value::F64(x) => Some(*x),
            _ => None,
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        match self.0.metadata.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn tensor_dims(&self, name: &str) -> Option<Vec<usize>> {
        self.0
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
    }
}

/// Reads the decoder config from GGUF metadata ([`DecoderConfig::from_gguf`]).
pub fn config_from_gguf(content: &Content) -> Result<DecoderConfig> {
    Ok(DecoderConfig::from_gguf(&Metadata(content))?)
}

/// The tensors of an open GGUF file.
pub struct GgufSource {
    content: Content,
    reader: RefCell<BufReader<File>>,
    device: Device,
    dequantize: bool,
    candle_qmatmul: bool,
}

impl GgufSource {
    /// Opens a GGUF file and reads its header.
    pub fn open(
        path: &Path,
        device: Device,
        dequantize: bool,
        candle_qmatmul: bool,
    ) -> Result<Self> {
        let file = File::open(path)
            .map_err(|e| invalid_model(format!("cannot open {}: {e}", path.display())))?;
        let mut reader = BufReader::new(file);
        // candle divides by the alignment (a zero panics inside it); GGUF requires a power of two.
        if let Ok(Some(a)) = crate::gguf_scan::alignment(&mut reader)
            && !a.is_power_of_two()
        {
            return Err(invalid_model(format!(
                "{}: general.alignment is {a}, not a power of two",
                path.display()
            )));
        }
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| invalid_model(format!("cannot read {}: {e}", path.display())))?;
        let content = Content::read(&mut reader).map_err(|e| {
            // Name the tensor when the failure is a type candle does not know.
            let unknown = File::open(path)
                .ok()
                .and_then(|f| crate::gguf_scan::first_unknown_type(&mut BufReader::new(f)).ok())
                .flatten();
            match unknown {
                Some((tensor, id)) => invalid_model(format!(
                    "{}: tensor `{tensor}` has GGML type {} (id {id}), which gllm has no kernel for \
                     (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                    path.display(),
                    crate::gguf_scan::ggml_type_name(id).unwrap_or("unknown"),
                )),
                None => invalid_model(format!("bad GGUF {}: {e}", path.display())),
            }
        })?;
        Ok(Self {
            content,
            reader: RefCell::new(reader),
            device,
            dequantize,
            candle_qmatmul,
        })
    }

    /// The parsed header (metadata and tensor infos).
    pub fn content(&self) -> &Content {
        &self.content
    }

    fn read(&self, name: &str) -> Result<candle_core::quantized::QTensor> {
        let mut r = self.reader.borrow_mut();
        let dev = if self.dequantize {
            Device::Cpu
        } else {
            self.device.clone()
        };
        let ty = self
            .content
            .tensor_infos
            .get(name)
            .map(|t| format!(" ({:?})", t.ggml_dtype))
            .unwrap_or_default();
        self.content
            .tensor(&mut *r, name, &dev)
            .map_err(model_err(&format!("tensor `{name}`{ty}")))
    }
}

impl TensorSource for GgufSource {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.content
            .tensor_infos
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.dims().to_vec()))
            .collect()
    }

    fn matrix(&self, name: &str) -> Result<Matrix> {
        let qt = self.read(name)?;
        let (rows, cols) = qt.shape().dims2().map_err(model_err(name))?;
        let half = match qt.dtype() {
            GgmlDType::F16 => Some(HalfKind::F16),
            GgmlDType::BF16 => Some(HalfKind::Bf16),
            _ => None,
        };
        match (qt.dtype(), half) {
            (_, Some(kind)) if self.device.is_cpu() => {
                let bytes = qt.data().map_err(model_err(name))?;
                let data: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                Matrix::half(name, kind, rows, cols, &data)
            }
            (GgmlDType::F32, _) | (_, Some(_)) => Ok(Matrix::F32(
                qt.dequantize(&self.device).map_err(model_err(name))?,
            )),
            _ if self.dequantize => Ok(Matrix::F32(
                qt.dequantize(&self.device).map_err(model_err(name))?,
            )),
            (ty, _) if self.device.is_cpu() && !self.candle_qmatmul => {
                let Some(kind) = block_type(ty) else {
                    return Err(invalid_model(format!(
                        "tensor `{name}`: GGUF type {ty:?} has no CPU kernel"
                    )));
                };
                let bytes = qt.data().map_err(model_err(name))?;
                QuantMatrix::from_gguf(kind, rows, cols, &bytes)
                    .map(Matrix::Packed)
                    .map_err(|e| invalid_model(format!("tensor `{name}`: {e}")))
            }
            _ => Ok(Matrix::Quant(Arc::new(qt))),
        }
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        let qt = self.read(name)?;
        qt.dequantize(&self.device)
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .map_err(model_err(name))
    }

    fn byte_len(&self, name: &str) -> u64 {
        self.content.tensor_infos.get(name).map_or(0, |t| {
            let blocks = t.shape.elem_count() / t.ggml_dtype.block_size().max(1);
            (blocks as u64).saturating_mul(t.ggml_dtype.type_size() as u64)
        })
    }
}

/// The gllm-kernels block type of a candle dtype, if it has CPU kernels.
fn block_type(ty: GgmlDType) -> Option<BlockType> {
    Some(match ty {
        GgmlDType::Q4_0 => BlockType::Q4_0,
        GgmlDType::Q4_1 => BlockType::Q4_1,
        GgmlDType::Q5_0 => BlockType::Q5_0,
        GgmlDType::Q5_1 => BlockType::Q5_1,
        GgmlDType::Q8_0 => BlockType::Q8_0,
        GgmlDType::Q2K => BlockType::Q2_K,
        GgmlDType::Q3K => BlockType::Q3_K,
        GgmlDType::Q4K => BlockType::Q4_K,
        GgmlDType::Q5K => BlockType::Q5_K,
        GgmlDType::Q6K => BlockType::Q6_K,
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_1 | GgmlDType::Q8K => {
            return None;
        }
    })
}

/// Loads a GGUF file. `dequantize` widens block-quantized weights to f32 (exact f32
/// arithmetic on the dequantized weights, as transformers computes with a GGUF).
pub fn load_gguf(
    path: &Path,
    device: Device,
    dequantize: bool,
    candle_qmatmul: bool,
    progress: &LoadProgress,
) -> Result<Qwen2Model> {
    let src = GgufSource::open(path, device.clone(), dequantize, candle_qmatmul)?;
    let cfg = config_from_gguf(src.content())?;
    crate::loader::check_strict(&cfg, &src, Naming::Gguf)?;
    crate::loader::build(cfg, &src, Naming::Gguf, device, progress)
}
