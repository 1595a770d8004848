//! Q3_K: super-blocks of 256 values in 16 sub-blocks of 16, each with a 6-bit scale (stored + 32); an f16 `d` per super-block: `(d · (sc − 32)) · (q − 4)`, q 3-bit. GGUF block: hmask[32] (the third bits), qs[64] (low two bits, as Q2_K), scales[12] (16 six-bit values: low nibbles in bytes 0-7, high two bits in bytes 8-11), d. Value `128h + 32j + l` has its third bit in bit `4h + j` of `hmask[l]`.
//!
//! Activations are quantized to Q8_K blocks (256 values, f32 scale, sums of 16); each
//! sub-block's dot product is exact in integers, scaled by its integer scale exactly
//! too, and the super-block's sum is scaled in f32.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q3_K block type.
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct Q3_K;

impl BlockFormat for Q3_K {
    const TYPE: BlockType = BlockType::Q3_K;
    const LAYOUT: Layout = Layout {
        low_bits: 2,
        high_bits: 1,
        scales: Scales::SubOffset { sub: 16, offset: 4 },
    };
    const F16_AT: &'static [usize] = &[108];

    fn decode(b: &[u8], out: &mut Decoded) {
        let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
        out.d = le16(b, 108);
        for i in 0..16 {
            let low = if i < 8 {
                scales[i] & 0x0F
            } else {
                scales[i - 8] >> 4
            };
            let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
            out.sc[i] = ((low | (high << 4)) as i8) - 32;
        }
        for h in 0..2 {
            for j in 0..4 {
                for l in 0..32 {
                    let low = (qs[32 * h + l] >> (2 * j)) & 3;
                    let high = (hmask[l] >> (4 * h + j)) & 1;
                    out.u[128 * h + 32 * j + l] = low | (high << 2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q3_K>();
    }
}
