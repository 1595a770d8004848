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

/// Evaluates `$body` with `$f` naming the [`BlockFormat`](crate::BlockFormat) type of
/// block type `$ty`: the one place a block type meets its file.
macro_rules! with_format {
    ($ty:expr, $f:ident => $body:expr) => {
        match $ty {
            BlockType::Q4_0 => with_format!(@ q4_0::Q4_0, $f, $body),
            BlockType::Q4_1 => with_format!(@ q4_1::Q4_1, $f, $body),
            BlockType::Q5_0 => with_format!(@ q5_0::Q5_0, $f, $body),
            BlockType::Q5_1 => with_format!(@ q5_1::Q5_1, $f, $body),
            BlockType::Q8_0 => with_format!(@ q8_0::Q8_0, $f, $body),
            BlockType::Q2_K => with_format!(@ q2_k::Q2_K, $f, $body),
            BlockType::Q3_K => with_format!(@ q3_k::Q3_K, $f, $body),
            BlockType::Q4_K => with_format!(@ q4_k::Q4_K, $f, $body),
            BlockType::Q5_K => with_format!(@ q5_k::Q5_K, $f, $body),
            BlockType::Q6_K => with_format!(@ q6_k::Q6_K, $f, $body),
        }
    };
    (@ $path:path, $f:ident, $body:expr) => {{
        type $f = $path;
        $body
    }};
}

/// The most quantized activation bytes one pass over the weights takes (half of a
/// 2 MiB L2, leaving room for the weights).
pub const ACT_BLOCK_BYTES: usize = 512 * 1024;

impl QuantMatrix {
    /// Repacks the GGUF data of a [rows, cols] tensor of type `ty` (rows = output
    /// features; GGUF lists the shape as [cols, rows]).
    pub fn from_gguf(
        ty: BlockType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, KernelError> {
        with_format!(ty, F => Ok(if ty.is_k() {
            QuantMatrix::K(KMatrix::from_gguf::<F>(rows, cols, data)?)
        } else {
            QuantMatrix::Legacy(LegacyMatrix::from_gguf::<F>(rows, cols, data)?)
        }))
    }

    /// Byte offsets of a GGUF block's f16 fields ([`crate::BlockFormat::F16_AT`]).
    pub fn f16_fields(ty: BlockType) -> &'static [usize] {
        use crate::BlockFormat;
        with_format!(ty, F => F::F16_AT)
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
    ///
    /// Long inputs go through in blocks of rows whose quantized activations stay within
    /// [`ACT_BLOCK_BYTES`], so that every weight group reads them from L2 rather than
    /// from L3 (each block reads the weights once more; for a 4864-wide matrix that is
    /// one pass per 96 rows).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) {
        let (rows, cols) = self.dims();
        // Quantized bytes per activation row: a byte per value and a few per block.
        let per_row = cols + cols / 8;
        let block = (ACT_BLOCK_BYTES / per_row.max(1)).max(8) / 8 * 8;
        let mut i0 = 0;
        while i0 < m {
            let n = block.min(m - i0);
            let xs = &x[i0 * cols..(i0 + n) * cols];
            let os = &mut out[i0 * rows..(i0 + n) * rows];
            match self {
                QuantMatrix::Legacy(p) => p.matmul_with(isa, xs, n, os),
                QuantMatrix::K(p) => p.matmul_with(isa, xs, n, os),
            }
            i0 += n;
        }
    }

    /// Stacks matrices of one type and width; `None` when they cannot be stacked.
    pub fn concat_rows(parts: &[&QuantMatrix]) -> Option<QuantMatrix> {
        match parts.first()? {
            QuantMatrix::Legacy(_) => LegacyMatrix::concat_rows(&each(parts, |p| match p {
                QuantMatrix::Legacy(l) => Some(l),
                QuantMatrix::K(_) => None,
            })?)
            .map(QuantMatrix::Legacy),
            QuantMatrix::K(_) => KMatrix::concat_rows(&each(parts, |p| match p {
                QuantMatrix::K(k) => Some(k),
                QuantMatrix::Legacy(_) => None,
            })?)
            .map(QuantMatrix::K),
        }
    }
}

/// What `pick` finds in every part, or `None` when a part is of the other family.
fn each<'a, T>(
    parts: &[&'a QuantMatrix],
    pick: impl Fn(&'a QuantMatrix) -> Option<&'a T>,
) -> Option<Vec<&'a T>> {
    parts.iter().map(|p| pick(p)).collect()
}
