//! [`QuantMatrix`]: a repacked GGUF block-quantized matrix of any type with kernels
//! here, the one type a backend needs to hold.

use crate::error::KernelError;
use crate::format::BlockType;
use crate::isa::Isa;
use crate::kquant::KMatrix;
use crate::legacy::LegacyMatrix;
use crate::{q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0};

/// A [rows, cols] block-quantized weight matrix, repacked for the CPU kernels.
#[derive(Debug, Clone)]
pub enum QuantMatrix {
    /// Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0.
    Legacy(LegacyMatrix),
    /// Q2_K … Q6_K.
    K(KMatrix),
}

/// Checks that `data` is exactly the blocks of a [rows, cols] matrix of type `ty`.
pub fn check_data(ty: BlockType, rows: usize, cols: usize, data: &[u8]) -> Result<(), KernelError> {
    let block = ty.block_values();
    if !cols.is_multiple_of(block) {
        return Err(KernelError::Width {
            ty: ty.name(),
            cols,
            block,
        });
    }
    let want = rows
        .checked_mul(cols / block)
        .and_then(|n| n.checked_mul(ty.block_bytes()))
        .unwrap_or(usize::MAX);
    if data.len() != want {
        return Err(KernelError::Length {
            ty: ty.name(),
            rows,
            cols,
            got: data.len(),
            want,
        });
    }
    Ok(())
}

impl QuantMatrix {
    /// Repacks the GGUF data of a [rows, cols] tensor of type `ty` (rows = output
    /// features; GGUF lists the shape as [cols, rows]).
    pub fn from_gguf(
        ty: BlockType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, KernelError> {
        use QuantMatrix::{K, Legacy};
        Ok(match ty {
            BlockType::Q4_0 => Legacy(LegacyMatrix::from_gguf::<q4_0::Q4_0>(rows, cols, data)?),
            BlockType::Q4_1 => Legacy(LegacyMatrix::from_gguf::<q4_1::Q4_1>(rows, cols, data)?),
            BlockType::Q5_0 => Legacy(LegacyMatrix::from_gguf::<q5_0::Q5_0>(rows, cols, data)?),
            BlockType::Q5_1 => Legacy(LegacyMatrix::from_gguf::<q5_1::Q5_1>(rows, cols, data)?),
            BlockType::Q8_0 => Legacy(LegacyMatrix::from_gguf::<q8_0::Q8_0>(rows, cols, data)?),
            BlockType::Q2_K => K(KMatrix::from_gguf::<q2_k::Q2_K>(rows, cols, data)?),
            BlockType::Q3_K => K(KMatrix::from_gguf::<q3_k::Q3_K>(rows, cols, data)?),
            BlockType::Q4_K => K(KMatrix::from_gguf::<q4_k::Q4_K>(rows, cols, data)?),
            BlockType::Q5_K => K(KMatrix::from_gguf::<q5_k::Q5_K>(rows, cols, data)?),
            BlockType::Q6_K => K(KMatrix::from_gguf::<q6_k::Q6_K>(rows, cols, data)?),
        })
    }

    /// Byte offsets of a GGUF block's f16 fields ([`crate::BlockFormat::F16_AT`]).
    pub fn f16_fields(ty: BlockType) -> &'static [usize] {
        use crate::BlockFormat;
        match ty {
            BlockType::Q4_0 => q4_0::Q4_0::F16_AT,
            BlockType::Q4_1 => q4_1::Q4_1::F16_AT,
            BlockType::Q5_0 => q5_0::Q5_0::F16_AT,
            BlockType::Q5_1 => q5_1::Q5_1::F16_AT,
            BlockType::Q8_0 => q8_0::Q8_0::F16_AT,
            BlockType::Q2_K => q2_k::Q2_K::F16_AT,
            BlockType::Q3_K => q3_k::Q3_K::F16_AT,
            BlockType::Q4_K => q4_k::Q4_K::F16_AT,
            BlockType::Q5_K => q5_k::Q5_K::F16_AT,
            BlockType::Q6_K => q6_k::Q6_K::F16_AT,
        }
    }

    /// The block type.
    pub fn block_type(&self) -> BlockType {
        match self {
            QuantMatrix::Legacy(p) => p.ty,
            QuantMatrix::K(p) => p.ty,
        }
    }

    /// (rows, cols).
    pub fn dims(&self) -> (usize, usize) {
        match self {
            QuantMatrix::Legacy(p) => (p.rows, p.cols),
            QuantMatrix::K(p) => (p.rows, p.cols),
        }
    }

    /// Dequantizes row `r` into `out` (len cols), as ggml does.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        match self {
            QuantMatrix::Legacy(p) => p.row_f32(r, out),
            QuantMatrix::K(p) => p.row_f32(r, out),
        }
    }

    /// `out[i * rows + j] = Σ_k x[i, k] · W[j, k]` for `x` [m, cols] row-major: the
    /// product [m, rows].
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_with(Isa::detect(), x, m, out)
    }

    /// [`Self::matmul`] with the kernels of `isa` (which the CPU must support, see
    /// [`Isa::available`]).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            QuantMatrix::Legacy(p) => p.matmul_with(isa, x, m, out),
            QuantMatrix::K(p) => p.matmul_with(isa, x, m, out),
        }
    }

    /// Stacks matrices of one type and width; `None` when they cannot be stacked.
    pub fn concat_rows(parts: &[&QuantMatrix]) -> Option<QuantMatrix> {
        match parts.first()? {
            QuantMatrix::Legacy(_) => {
                let ps: Option<Vec<&LegacyMatrix>> = parts
                    .iter()
                    .map(|p| match p {
                        QuantMatrix::Legacy(l) => Some(l),
                        QuantMatrix::K(_) => None,
                    })
                    .collect();
                LegacyMatrix::concat_rows(&ps?).map(QuantMatrix::Legacy)
            }
            QuantMatrix::K(_) => {
                let ps: Option<Vec<&KMatrix>> = parts
                    .iter()
                    .map(|p| match p {
                        QuantMatrix::K(k) => Some(k),
                        QuantMatrix::Legacy(_) => None,
                    })
                    .collect();
                KMatrix::concat_rows(&ps?).map(QuantMatrix::K)
            }
        }
    }
}
