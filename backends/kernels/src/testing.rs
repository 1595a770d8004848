//! The checks every block type's tests run (one suite, called from each type's file):
//! GGUF blocks made at random, repacked, then compared with candle's dequantization,
//! with exact f32 arithmetic on the dequantized weights, and kernel against kernel.

use candle_core::quantized::GgmlDType;
use candle_core::quantized::ggml_file::qtensor_from_ggml;

use crate::error::KernelError;
use crate::format::{BlockFormat, BlockType};
use crate::isa::Isa;
use crate::quant::QuantMatrix;
use crate::testdata::{Rng, random_blocks};

fn candle_type(ty: BlockType) -> GgmlDType {
    match ty {
        BlockType::Q4_0 => GgmlDType::Q4_0,
        BlockType::Q4_1 => GgmlDType::Q4_1,
        BlockType::Q5_0 => GgmlDType::Q5_0,
        BlockType::Q5_1 => GgmlDType::Q5_1,
        BlockType::Q8_0 => GgmlDType::Q8_0,
        BlockType::Q2_K => GgmlDType::Q2K,
        BlockType::Q3_K => GgmlDType::Q3K,
        BlockType::Q4_K => GgmlDType::Q4K,
        BlockType::Q5_K => GgmlDType::Q5K,
        BlockType::Q6_K => GgmlDType::Q6K,
    }
}

/// Candle's dequantization of the blocks, [rows · cols].
fn candle_dequantize(ty: BlockType, rows: usize, cols: usize, data: &[u8]) -> Vec<f32> {
    let dev = candle_core::Device::Cpu;
    let q = qtensor_from_ggml(candle_type(ty), data, vec![rows, cols], &dev)
        .expect("candle reads the blocks");
    q.dequantize(&dev)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("candle dequantizes")
}

fn activations(m: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..m * cols).map(|_| rng.uniform(-2.0, 2.0)).collect()
}

/// Runs every check on block type `F`.
pub fn check_format<F: BlockFormat>() {
    let ty = F::TYPE;
    let block = ty.block_values();
    // Small shapes, with partial groups and m around the kernels' tile sizes.
    for (rows, cols) in [(13, block), (21, 3 * block), (8, 2 * block)] {
        check_shape::<F>(rows, cols, &[1, 3, 4, 5, 9], rows);
    }
    // Qwen2-0.5B's widths: 896 (legacy only) and 4864 = 19 · 256.
    // 100 rows of 4864 cross a block of activation rows (crate::quant::ACT_BLOCK_BYTES).
    let wide = if ty.is_k() { 4864 } else { 896 };
    check_shape::<F>(29, wide, &[1, 7], 29);
    check_shape::<F>(19, 4864, &[2, 100], 19);
    // The vocabulary's row count (151936), every row through the SIMD kernels and a
    // sample of rows against the references.
    check_shape::<F>(151_936, block, &[1], 40);
    check_concat::<F>();
    check_bad_input::<F>();
    check_extremes::<F>();
}

/// Every quantized bit set (the largest stored values and scale bytes) against
/// activations that all quantize to ±127: the 16-bit sums of the AVX2 kernels at their
/// bound, where one more word per run would overflow.
fn check_extremes<F: BlockFormat>() {
    let ty = F::TYPE;
    let (rows, cols, m) = (16, 2 * ty.block_values(), 5);
    let mut data = vec![0xFFu8; rows * cols / ty.block_values() * ty.block_bytes()];
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for (i, at) in F::F16_AT.iter().enumerate() {
            let v = if i == 0 { 0.01 } else { -0.005 };
            block[*at..*at + 2].copy_from_slice(&::half::f16::from_f32(v).to_le_bytes());
        }
    }
    let p = QuantMatrix::from_gguf(ty, rows, cols, &data).expect("valid blocks");
    for sign in [1f32, -1.0] {
        let x = vec![sign; m * cols];
        let mut scalar = vec![0f32; rows * m];
        p.matmul_with(Isa::Scalar, &x, m, &mut scalar);
        let mut w = vec![0f32; cols];
        p.row_f32(0, &mut w);
        let magnitude: f32 = w.iter().map(|v| v.abs()).sum();
        assert!(magnitude > 0.0, "{ty}: the extreme blocks are all zero");
        for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
            let mut got = vec![0f32; rows * m];
            p.matmul_with(isa, &x, m, &mut got);
            for (j, (g, s)) in got.iter().zip(&scalar).enumerate() {
                assert!(
                    (g - s).abs() <= 4e-6 * magnitude + 1e-6,
                    "{ty} {isa:?} extremes, activations {sign}: output {j}: {g} vs scalar {s}"
                );
            }
        }
    }
}

/// Checks one [rows, cols] matrix for each activation row count in `ms`; the reference
/// comparisons cover `sample` rows spread over the matrix (all of them if `sample` ≥ rows).
fn check_shape<F: BlockFormat>(rows: usize, cols: usize, ms: &[usize], sample: usize) {
    let ty = F::TYPE;
    let data = random_blocks(F::TYPE, rows, cols, (rows * 31 + cols) as u64);
    let p = QuantMatrix::from_gguf(ty, rows, cols, &data).expect("valid blocks");
    assert_eq!(p.dims(), (rows, cols));
    let step = rows.div_ceil(sample).max(1);
    let checked: Vec<usize> = (0..rows).step_by(step).chain([rows - 1]).collect();

    // Dequantization: exactly candle's, on the checked rows.
    let sub_rows = checked.len();
    let mut sub_data = Vec::new();
    let row_bytes = cols / ty.block_values() * ty.block_bytes();
    for &r in &checked {
        sub_data.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let want = candle_dequantize(ty, sub_rows, cols, &sub_data);
    let mut w = vec![0f32; cols];
    let mut weights = Vec::with_capacity(sub_rows * cols);
    for (i, &r) in checked.iter().enumerate() {
        p.row_f32(r, &mut w);
        for (c, (a, b)) in w.iter().zip(&want[i * cols..(i + 1) * cols]).enumerate() {
            assert_eq!(
                a, b,
                "{ty} [{rows}, {cols}] row {r} col {c}: ours {a} vs candle {b}"
            );
        }
        weights.extend_from_slice(&w);
    }

    for &m in ms {
        let x = activations(m, cols, (m * 7 + cols) as u64);
        // Σ |w·x| per output: the scale of the f32 rounding in any summation order.
        let mut magnitude = vec![0f64; rows * m];
        for r in 0..rows {
            p.row_f32(r, &mut w);
            for i in 0..m {
                let xi = &x[i * cols..(i + 1) * cols];
                magnitude[i * rows + r] = w
                    .iter()
                    .zip(xi)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
            }
        }
        let mut scalar = vec![0f32; rows * m];
        p.matmul_with(Isa::Scalar, &x, m, &mut scalar);
        // The scalar kernel against exact f32 on the dequantized weights: only the
        // activations' 8-bit quantization separates them.
        for (i_r, &r) in checked.iter().enumerate() {
            let wr = &weights[i_r * cols..(i_r + 1) * cols];
            for i in 0..m {
                let xi = &x[i * cols..(i + 1) * cols];
                let exact: f64 = wr
                    .iter()
                    .zip(xi)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let scale = magnitude[i * rows + r];
                let got = scalar[i * rows + r] as f64;
                assert!(
                    (got - exact).abs() <= 0.01 * scale + 1e-6,
                    "{ty} [{rows}, {cols}] m {m} row {r} act {i}: {got} vs exact {exact} (Σ|w·x| {scale})"
                );
            }
        }
        // Every SIMD kernel computes the scalar kernel's integer sums; only the order
        // of the f32 additions of the blocks' terms (and fused multiply-adds) differs.
        for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
            let mut got = vec![0f32; rows * m];
            p.matmul_with(isa, &x, m, &mut got);
            for r in 0..rows {
                for i in 0..m {
                    let (g, s) = (got[i * rows + r], scalar[i * rows + r]);
                    let tol = 4e-6 * magnitude[i * rows + r] + 1e-6;
                    assert!(
                        ((g - s).abs() as f64) <= tol,
                        "{ty} {isa:?} [{rows}, {cols}] m {m} row {r} act {i}: {g} vs scalar {s} (tolerance {tol})"
                    );
                }
            }
        }
    }
}

fn check_concat<F: BlockFormat>() {
    let ty = F::TYPE;
    let cols = ty.block_values();
    let part = |rows: usize, seed: u64| {
        QuantMatrix::from_gguf(ty, rows, cols, &random_blocks(F::TYPE, rows, cols, seed))
            .expect("valid")
    };
    let (a, b) = (part(8, 1), part(3, 2));
    assert!(
        QuantMatrix::concat_rows(&[&b, &a]).is_none(),
        "{ty}: a partial group first"
    );
    let ab = QuantMatrix::concat_rows(&[&a, &b]).expect("one type, whole groups first");
    let x = activations(2, cols, 5);
    let (mut oa, mut ob, mut oab) = (vec![0f32; 16], vec![0f32; 6], vec![0f32; 22]);
    a.matmul(&x, 2, &mut oa);
    b.matmul(&x, 2, &mut ob);
    ab.matmul(&x, 2, &mut oab);
    for i in 0..2 {
        let want = [&oa[i * 8..(i + 1) * 8], &ob[i * 3..(i + 1) * 3]].concat();
        assert_eq!(oab[i * 11..(i + 1) * 11], want, "{ty} activation row {i}");
    }
}

fn check_bad_input<F: BlockFormat>() {
    let ty = F::TYPE;
    let cols = ty.block_values();
    let data = random_blocks(F::TYPE, 4, cols, 9);
    assert!(matches!(
        QuantMatrix::from_gguf(ty, 4, cols - 16, &data),
        Err(KernelError::Width { .. })
    ));
    let err = QuantMatrix::from_gguf(ty, 4, cols, &data[..data.len() - 1]).expect_err("truncated");
    assert!(matches!(err, KernelError::Length { .. }), "{err}");
    assert!(err.to_string().contains(ty.name()), "{err}");
}

/// For every kernel level this CPU has: `matmul(isa, x, m, out)` of `x` [m, k] by an
/// [n, k] matrix gives each row alone the bits it gives in the batch (decode ==
/// prefill), and every output within `tol` of `want(i, j)`.
#[allow(clippy::too_many_arguments)]
pub fn check_rows_alone_and_values(
    what: &str,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    matmul: impl Fn(Isa, &[f32], usize, &mut [f32]),
    want: impl Fn(usize, usize) -> f32,
    tol: f32,
) {
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; n * m];
        matmul(isa, x, m, &mut out);
        for i in 0..m {
            let mut alone = vec![0f32; n];
            matmul(isa, &x[i * k..(i + 1) * k], 1, &mut alone);
            assert_eq!(
                alone,
                out[i * n..(i + 1) * n],
                "{isa:?} {what}: row {i} alone"
            );
            for j in 0..n {
                let (got, want) = (out[i * n + j], want(i, j));
                assert!(
                    (got - want).abs() < tol,
                    "{isa:?} {what} {m}x{k}x{n} [{i}, {j}]: {got} vs {want}"
                );
            }
        }
    }
}
