//! Weight matrices in the forms the loaders produce (f32, bf16/f16, GGUF-quantized)
//! and the two operations the decoder needs from them: `x · Wᵀ` and row lookup.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::{Result, internal, invalid_model};
use gllm_kernels::{HalfKind, PackedHalf, QuantMatrix};

/// A [rows, cols] weight matrix (rows = output features, as PyTorch stores `Linear.weight`).
pub enum Matrix {
    /// f32 values as a candle tensor (any device).
    F32(Tensor),
    /// bf16/f16 values kept 16-bit on the CPU (repacked for streaming), widened in the
    /// kernel.
    Half(PackedHalf),
    /// A GGUF block-quantized tensor, multiplied by candle's quantized kernels (off
    /// the CPU, or with `candle_qmatmul = "true"`).
    Quant(Arc<QTensor>),
    /// GGUF blocks repacked for gllm-kernels' CPU kernels.
    Packed(QuantMatrix),
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (r, c) = self.dims();
        match self {
            Matrix::F32(_) => write!(f, "Matrix::F32[{r}, {c}]"),
            Matrix::Half(h) => write!(f, "Matrix::{:?}[{r}, {c}]", h.kind),
            Matrix::Quant(q) => write!(f, "Matrix::{:?}[{r}, {c}]", q.dtype()),
            Matrix::Packed(p) => write!(f, "Matrix::Packed{}[{r}, {c}]", p.block_type()),
        }
    }
}

impl Matrix {
    /// A bf16/f16 matrix for the CPU kernels from row-major 16-bit values; an invalid-
    /// model error naming tensor `name` when their count is not `rows * cols`.
    pub fn half(
        name: &str,
        kind: HalfKind,
        rows: usize,
        cols: usize,
        values: &[u16],
    ) -> Result<Matrix> {
        PackedHalf::new(kind, rows, cols, values)
            .map(Matrix::Half)
            .ok_or_else(|| {
                invalid_model(format!(
                    "tensor `{name}`: {} values for a [{rows}, {cols}] matrix",
                    values.len()
                ))
            })
    }

    /// (rows, cols).
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Matrix::F32(t) => t.dims2().unwrap_or((0, 0)),
            Matrix::Half(h) => (h.rows, h.cols),
            Matrix::Quant(q) => q.shape().dims2().unwrap_or((0, 0)),
            Matrix::Packed(p) => p.dims(),
        }
    }

    /// `x` [m, cols] (f32) times the transpose: [m, rows].
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matrix::F32(w) => Ok(x.matmul(&w.t()?)?),
            Matrix::Half(_) | Matrix::Packed(_) => {
                let (m, rows) = (x.dims2()?.0, self.dims().0);
                let mut out = Vec::new();
                on_host(x, |xs| self.matmul_t_host(xs, m, &mut out))??;
                Ok(Tensor::from_vec(out, (m, rows), x.device())?)
            }
            Matrix::Quant(q) => Ok(x.contiguous()?.apply_op1_no_bwd(q.as_ref())?),
        }
    }

    /// `x` [m, cols] times the transpose, on the host: [m, rows]. The repacked
    /// matrices run their kernels on the slice; the others go through candle.
    pub fn matmul_t_host(&self, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<()> {
        let (rows, cols) = self.dims();
        if x.len() != m * cols {
            return Err(internal(format!(
                "matmul: {} inputs for {m} rows of width {cols}",
                x.len()
            )));
        }
        // The kernels write every output: `resize` only zeroes a buffer's growth.
        out.resize(m * rows, 0.0);
        match self {
            Matrix::Half(h) => h.matmul(x, m, out),
            Matrix::Packed(p) => p.matmul(x, m, out),
            Matrix::F32(_) | Matrix::Quant(_) => {
                let t = Tensor::from_slice(x, (m, cols), &Device::Cpu)?;
                *out = self.matmul_t(&t)?.flatten_all()?.to_vec1()?;
            }
        }
        Ok(())
    }

    /// Rows `ids` as f32: [ids.len(), cols]. Ids must be checked by the caller.
    pub fn rows_f32(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Matrix::F32(w) => {
                let ids = Tensor::new(ids, w.device())?;
                Ok(w.index_select(&ids, 0)?)
            }
            Matrix::Half(h) => {
                let mut out = vec![0f32; ids.len() * h.cols];
                for (row, &id) in out.chunks_exact_mut(h.cols.max(1)).zip(ids) {
                    h.row_f32(id as usize, row);
                }
                Ok(Tensor::from_vec(out, (ids.len(), h.cols), device)?)
            }
            Matrix::Quant(q) => {
                let ids = Tensor::new(ids, &q.device())?;
                Ok(q.embedding(&ids)?.to_device(device)?)
            }
            Matrix::Packed(p) => {
                let cols = p.dims().1;
                let mut out = vec![0f32; ids.len() * cols];
                for (row, &id) in out.chunks_exact_mut(cols.max(1)).zip(ids) {
                    p.row_f32(id as usize, row);
                }
                Ok(Tensor::from_vec(out, (ids.len(), cols), device)?)
            }
        }
    }

    /// Rows `ids` as f32 on the host: [ids.len() · cols]. Ids must be checked by the
    /// caller.
    pub fn rows_host(&self, ids: &[u32]) -> Result<Vec<f32>> {
        on_host(&self.rows_f32(ids, &Device::Cpu)?, <[f32]>::to_vec)
    }

    /// The whole matrix as an f32 tensor.
    pub fn to_f32(&self, device: &Device) -> Result<Tensor> {
        match self {
            Matrix::F32(t) => Ok(t.to_device(device)?),
            Matrix::Half(h) => {
                let mut out = vec![0f32; h.rows * h.cols];
                for (r, row) in out.chunks_exact_mut(h.cols.max(1)).enumerate() {
                    h.row_f32(r, row);
                }
                Ok(Tensor::from_vec(out, (h.rows, h.cols), device)?)
            }
            Matrix::Quant(q) => Ok(q.dequantize(device)?.to_dtype(DType::F32)?),
            Matrix::Packed(p) => {
                let (rows, cols) = p.dims();
                let mut out = vec![0f32; rows * cols];
                for (r, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
                    p.row_f32(r, row);
                }
                Ok(Tensor::from_vec(out, (rows, cols), device)?)
            }
        }
    }

    /// Stacks matrices of one storage kind and width into one (rows in order), so that
    /// projections sharing an input run as one matmul; `None` when they differ.
    pub fn concat_rows(parts: &[&Matrix]) -> Option<Matrix> {
        let cols = parts.first()?.dims().1;
        if parts.iter().any(|p| p.dims().1 != cols) {
            return None;
        }
        match parts[0] {
            Matrix::F32(_) => {
                let ts = each(parts, |p| match p {
                    Matrix::F32(t) => Some(t),
                    _ => None,
                })?;
                Tensor::cat(&ts, 0).ok().map(Matrix::F32)
            }
            Matrix::Half(_) => {
                let hs = each(parts, |p| match p {
                    Matrix::Half(h) => Some(h),
                    _ => None,
                })?;
                PackedHalf::concat_rows(&hs).map(Matrix::Half)
            }
            Matrix::Packed(_) => {
                let ps = each(parts, |p| match p {
                    Matrix::Packed(q) => Some(q),
                    _ => None,
                })?;
                QuantMatrix::concat_rows(&ps).map(Matrix::Packed)
            }
            Matrix::Quant(_) => None,
        }
    }
}

/// Runs `f` on the f32 values of `x` in row-major order: in place for a CPU tensor,
/// copied to the host from other devices.
pub(crate) fn on_host<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            let xs = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            Ok(f(&xs[start..start + x.elem_count()]))
        }
        _ => {
            drop(storage);
            Ok(f(&x.flatten_all()?.to_vec1::<f32>()?))
        }
    }
}

/// What `pick` finds in every part, or `None` when a part is of another kind.
fn each<'a, T>(
    parts: &[&'a Matrix],
    pick: impl Fn(&'a Matrix) -> Option<&'a T>,
) -> Option<Vec<&'a T>> {
    parts.iter().map(|p| pick(p)).collect()
}

/// Projections of one input, their outputs side by side. Consecutive parts whose
/// weights (and biases) stack run as one matmul: q, k and v of one type are one
/// product, and where v alone has another type (llama.cpp's Q4_K_M gives v Q6_K),
/// q and k still are.
#[derive(Debug)]
pub struct Projections {
    /// One layer per run of stacked parts, and the width of each part in it.
    runs: Vec<(Linear, Vec<usize>)>,
}

impl Projections {
    /// Stacks each part onto the run before it where their weights (and biases) can
    /// be stacked.
    pub fn new(parts: Vec<Linear>) -> Self {
        let mut runs: Vec<(Linear, Vec<usize>)> = Vec::new();
        for part in parts {
            let width = part.weight.dims().0;
            if let Some((run, widths)) = runs.last_mut()
                && let Some(stacked) = run.stack(&part)
            {
                *run = stacked;
                widths.push(width);
                continue;
            }
            runs.push((part, vec![width]));
        }
        Self { runs }
    }

    /// How many matmuls a forward pass takes: one per run of stacked parts.
    pub fn matmuls(&self) -> usize {
        self.runs.len()
    }

    /// The outputs of every part for `x` [m, in].
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for (l, widths) in &self.runs {
            let y = l.forward(x)?;
            let mut off = 0;
            for w in widths {
                out.push(y.narrow(1, off, *w)?);
                off += w;
            }
        }
        Ok(out)
    }

    /// [`Projections::forward`] on the host: the parts' outputs side by side in each
    /// row of `out`, [m, Σ widths]. With more than one run, each run's product goes
    /// through `part` (the caller's buffer, reused from call to call) into its columns.
    pub fn forward_host(
        &self,
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
        part: &mut Vec<f32>,
    ) -> Result<()> {
        if let [(l, _)] = self.runs.as_slice() {
            return l.forward_host(x, m, out);
        }
        let width: usize = self.runs.iter().map(|(l, _)| l.weight.dims().0).sum();
        // Every column is written below: `resize` only zeroes a buffer's growth.
        out.resize(m * width, 0.0);
        let mut col = 0;
        for (l, _) in &self.runs {
            let w = l.weight.dims().0;
            l.forward_host(x, m, part)?;
            for (dst, src) in out.chunks_exact_mut(width).zip(part.chunks_exact(w.max(1))) {
                dst[col..col + w].copy_from_slice(src);
            }
            col += w;
        }
        Ok(())
    }
}

/// `y = x · Wᵀ (+ b)`.
#[derive(Debug)]
pub struct Linear {
    /// The weight [out, in].
    pub weight: Matrix,
    /// The optional bias [out], f32.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `self` with `next`'s rows after its own, when their weights stack and both or
    /// neither have a bias.
    fn stack(&self, next: &Linear) -> Option<Linear> {
        let weight = Matrix::concat_rows(&[&self.weight, &next.weight])?;
        let bias = match (&self.bias, &next.bias) {
            (None, None) => None,
            (Some(a), Some(b)) => Some(Tensor::cat(&[a, b], 0).ok()?),
            _ => return None,
        };
        Some(Linear { weight, bias })
    }

    /// Applies the layer to `x` [m, in].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.matmul_t(x)?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }

    /// [`Linear::forward`] on the host: `x` [m, in] → `out` [m, out].
    pub fn forward_host(&self, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<()> {
        self.weight.matmul_t_host(x, m, out)?;
        if let Some(b) = &self.bias {
            let width = self.weight.dims().0;
            on_host(b, |b| {
                for row in out.chunks_exact_mut(width.max(1)) {
                    crate::host::add_into(row, b);
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gllm_kernels::BlockType;
    use gllm_kernels::testdata::random_blocks;

    use super::*;

    fn packed(ty: BlockType, rows: usize, seed: u64) -> Linear {
        let data = random_blocks(ty, rows, 256, seed);
        let q = QuantMatrix::from_gguf(ty, rows, 256, &data).expect("whole blocks");
        Linear {
            weight: Matrix::Packed(q),
            bias: None,
        }
    }

    #[test]
    fn parts_that_stack_share_a_matmul_and_every_part_keeps_its_columns() -> Result<()> {
        // Q4_K_M's q, k and v: q and k stack, v (Q6_K) runs alone.
        let parts = || {
            vec![
                packed(BlockType::Q4_K, 16, 1),
                packed(BlockType::Q4_K, 8, 2),
                packed(BlockType::Q6_K, 8, 3),
            ]
        };
        let alone = parts();
        let p = Projections::new(parts());
        assert_eq!(p.matmuls(), 2);
        let m = 3;
        let x: Vec<f32> = (0..m * 256)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let (mut got, mut part) = (Vec::new(), Vec::new());
        p.forward_host(&x, m, &mut got, &mut part)?;
        let mut want = vec![Vec::new(); m];
        for l in &alone {
            let mut y = Vec::new();
            l.forward_host(&x, m, &mut y)?;
            let w = l.weight.dims().0;
            for (i, row) in want.iter_mut().enumerate() {
                row.extend_from_slice(&y[i * w..(i + 1) * w]);
            }
        }
        assert_eq!(got, want.concat(), "stacked outputs are the parts' bits");
        let t = Tensor::from_slice(&x, (m, 256), &Device::Cpu)?;
        let outs = p.forward(&t)?;
        let widths: Vec<usize> = outs.iter().map(|o| o.dims()[1]).collect();
        assert_eq!(widths, [16, 8, 8]);

        let same = Projections::new(vec![
            packed(BlockType::Q4_K, 16, 1),
            packed(BlockType::Q4_K, 8, 2),
        ]);
        assert_eq!(same.matmuls(), 1);
        // A bias on one part only: nothing stacks.
        let mut biased = parts();
        biased[1].bias = Some(Tensor::zeros(8, DType::F32, &Device::Cpu)?);
        assert_eq!(Projections::new(biased).matmuls(), 3);
        Ok(())
    }
}
