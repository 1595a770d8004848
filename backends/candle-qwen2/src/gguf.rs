//! GGUF files (llama.cpp) of architecture `qwen2` or `llama`: config from the metadata,
//! tensors kept in their stored type (block-quantized, f16/bf16 or f32).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use crate::config::{Qwen2Config, RopeStyle};
use crate::error::{Result, invalid_model, model_err};
use crate::linear::Matrix;
use crate::loader::{LayerPart, Part, TensorSource};
use crate::model::Qwen2Model;
use gllm_api::LoadProgress;
use gllm_kernels::{BlockType, HalfKind, QuantMatrix};

/// The GGUF name of a decoder tensor.
pub fn gguf_name(part: Part) -> String {
    use LayerPart::*;
    match part {
        Part::Embed => "token_embd.weight".into(),
        Part::Norm => "output_norm.weight".into(),
        Part::LmHead => "output.weight".into(),
        Part::Layer(l, p) => {
            let s = match p {
                InputNorm => "attn_norm.weight",
                QW => "attn_q.weight",
                QB => "attn_q.bias",
                KW => "attn_k.weight",
                KB => "attn_k.bias",
                VW => "attn_v.weight",
                VB => "attn_v.bias",
                OW => "attn_output.weight",
                PostNorm => "ffn_norm.weight",
                Gate => "ffn_gate.weight",
                Up => "ffn_up.weight",
                Down => "ffn_down.weight",
            };
            format!("blk.{l}.{s}")
        }
    }
}

fn meta_usize(md: &std::collections::HashMap<String, Value>, key: &str) -> Option<usize> {
    let v = md.get(key)?;
    let n: i128 = match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        _ => return None,
    };
    usize::try_from(n).ok()
}

fn meta_f64(md: &std::collections::HashMap<String, Value>, key: &str) -> Option<f64> {
    match md.get(key)? {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        _ => None,
    }
}

/// Reads the decoder config from GGUF metadata (and the embedding's shape).
pub fn config_from_gguf(content: &Content) -> Result<Qwen2Config> {
    let md = &content.metadata;
    let arch = match md.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(invalid_model("GGUF has no general.architecture")),
    };
    let rope_style = match arch.as_str() {
        "qwen2" => RopeStyle::Halved,
        "llama" => RopeStyle::Interleaved,
        other => {
            return Err(gllm_api::BackendError::unsupported(format!(
                "GGUF architecture `{other}` is not supported (qwen2, llama)"
            ))
            .into());
        }
    };
    let req = |k: &str| -> Result<usize> {
        let key = format!("{arch}.{k}");
        meta_usize(md, &key).ok_or_else(|| invalid_model(format!("GGUF metadata lacks `{key}`")))
    };
    let hidden = req("embedding_length")?;
    let heads = req("attention.head_count")?;
    let kv_heads = meta_usize(md, &format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
    let head_dim = meta_usize(md, &format!("{arch}.attention.key_length"))
        .unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    if let Some(rot) = meta_usize(md, &format!("{arch}.rope.dimension_count"))
        && rot != head_dim
    {
        return Err(gllm_api::BackendError::unsupported(format!(
            "partial rotary embeddings ({rot} of {head_dim} dimensions) are not supported"
        ))
        .into());
    }
    if let Some(Value::String(s)) = md.get(&format!("{arch}.rope.scaling.type"))
        && s != "none"
    {
        return Err(gllm_api::BackendError::unsupported(format!(
            "rope scaling `{s}` is not supported"
        ))
        .into());
    }
    let embed = gguf_name(Part::Embed);
    let vocab = content
        .tensor_infos
        .get(&embed)
        .and_then(|t| t.shape.dims().first().copied())
        .ok_or_else(|| invalid_model(format!("missing tensor `{embed}`")))?;
    let eps =
        meta_f64(md, &format!("{arch}.attention.layer_norm_rms_epsilon")).ok_or_else(|| {
            invalid_model(format!(
                "GGUF metadata lacks `{arch}.attention.layer_norm_rms_epsilon`"
            ))
        })?;
    let cfg = Qwen2Config {
        architecture: arch.clone(),
        hidden_size: hidden,
        intermediate_size: req("feed_forward_length")?,
        num_hidden_layers: req("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        vocab_size: vocab,
        rms_norm_eps: eps,
        rope_theta: meta_f64(md, &format!("{arch}.rope.freq_base")).unwrap_or(10_000.0),
        max_position_embeddings: meta_usize(md, &format!("{arch}.context_length")).unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key(&gguf_name(Part::LmHead)),
        attention_bias: arch == "qwen2",
        rope_style,
    };
    cfg.validate()?;
    Ok(cfg)
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
    crate::loader::check_strict(&cfg, &src, &gguf_name, &[])?;
    crate::loader::build(cfg, &src, &gguf_name, device, progress)
}
