//! Q8_0: blocks of 32 values, an f16 scale `d` and signed bytes: `d · q`. Stored here as `q + 128`. GGUF block: d, 32 signed bytes.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

use crate::KernelError;
use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q8_0 block type.
#[derive(Debug, Clone, Copy)]
pub struct Q8_0;

impl BlockFormat for Q8_0 {
    const TYPE: BlockType = BlockType::Q8_0;
    const LAYOUT: Layout = Layout {
        low_bits: 8,
        high_bits: 0,
        scales: Scales::Offset(128),
    };
    const F16_AT: &'static [usize] = &[0];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        for (u, q) in out.u.iter_mut().zip(&b[2..34]) {
            *u = q ^ 0x80;
        }
    }
}

/// Quantizes a [rows, cols] f32 matrix (row-major; `cols` a multiple of 32) into
/// GGUF Q8_0 blocks as ggml's reference quantizer does: per block of 32 values,
/// `d = max|x| / 127` stored in f16 and `q = round(x / d)`. Each value is then within
/// `d / 2` of its source (plus the f16 rounding of `d`).
pub fn quantize(rows: usize, cols: usize, x: &[f32]) -> Result<Vec<u8>, KernelError> {
    if !cols.is_multiple_of(32) {
        return Err(KernelError::Width {
            ty: "q8_0",
            cols,
            block: 32,
        });
    }
    let want = rows.saturating_mul(cols);
    if x.len() != want {
        return Err(KernelError::Length {
            ty: "f32",
            rows,
            cols,
            got: x.len(),
            want,
        });
    }
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for block in x.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&::half::f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::quant::QuantMatrix;
    use crate::testdata::Rng;
    use crate::{BlockType, KernelError};

    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q8_0>();
    }

    #[test]
    fn quantized_values_are_within_half_a_step_of_their_source() {
        // BERT-base's widths: 768 in, 3072 out (and back).
        for (rows, cols) in [(24, 768), (5, 3072), (3, 32)] {
            let mut rng = Rng::new((rows * cols) as u64);
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-0.3, 0.3)).collect();
            let blocks = super::quantize(rows, cols, &w).expect("quantizes");
            assert_eq!(blocks.len(), rows * cols / 32 * 34);
            let q = QuantMatrix::from_gguf(BlockType::Q8_0, rows, cols, &blocks).expect("repacks");
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                q.row_f32(r, &mut row);
                for (b, (got, want)) in row.chunks(32).zip(w[r * cols..].chunks(32)).enumerate() {
                    let amax = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                    // Half a step, and the f16 rounding of the scale (2^-11 relative) over 127 steps.
                    let tol = amax / 127.0 * (0.5 + 127.0 / 2048.0) + 1e-7;
                    for (g, w) in got.iter().zip(want) {
                        assert!((g - w).abs() <= tol, "row {r} block {b}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_zero_block_stays_zero_and_bad_shapes_are_refused() {
        let blocks = super::quantize(1, 32, &[0.0; 32]).expect("quantizes");
        assert!(blocks.iter().all(|&b| b == 0));
        assert!(matches!(
            super::quantize(1, 48, &[0.0; 48]),
            Err(KernelError::Width { cols: 48, .. })
        ));
        assert!(matches!(
            super::quantize(2, 32, &[0.0; 32]),
            Err(KernelError::Length { .. })
        ));
    }
}
