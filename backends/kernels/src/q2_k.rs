//! Q2_K: super-blocks of 256 values in 16 sub-blocks of 16, each with a 4-bit scale `sc` and a 4-bit minimum `m`; f16 `d` and `dmin` per super-block: `(d · sc) · q − dmin · m`, q 2-bit. GGUF block: scales[16] (low nibble sc, high m), qs[64], d, dmin. Value `128h + 32j + l` (l < 32) is bits `2j..2j+2` of `qs[32h + l]`.
//!
//! Activations are quantized to Q8_K blocks (256 values, f32 scale, sums of 16); each
//! sub-block's dot product is exact in integers, scaled by its integer scale exactly
//! too, and the super-block's sum is scaled in f32.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q2_K block type.
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct Q2_K;

impl BlockFormat for Q2_K {
    const TYPE: BlockType = BlockType::Q2_K;
    const LAYOUT: Layout = Layout {
        low_bits: 2,
        high_bits: 0,
        scales: Scales::SubMin { sub: 16 },
    };
    const F16_AT: &'static [usize] = &[80, 82];

    fn decode(b: &[u8], out: &mut Decoded) {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        out.d = le16(b, 80);
        out.dmin = le16(b, 82);
        for (i, s) in scales.iter().enumerate() {
            out.sc[i] = (s & 0x0F) as i8;
            out.m[i] = (s >> 4) as i8;
        }
        for h in 0..2 {
            for j in 0..4 {
                for l in 0..32 {
                    out.u[128 * h + 32 * j + l] = (qs[32 * h + l] >> (2 * j)) & 3;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q2_K>();
    }
}
