//! Q5_0: blocks of 32 values, an f16 scale `d` and 5-bit values: `d · (q − 16)`. GGUF block: d, the 32 fifth bits (a little-endian u32, bit j for value j), 16 bytes of low nibbles as in Q4_0.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q5_0 block type.
#[derive(Debug, Clone, Copy)]
pub struct Q5_0;

impl BlockFormat for Q5_0 {
    const TYPE: BlockType = BlockType::Q5_0;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 1,
        scales: Scales::Offset(16),
    };
    const F16_AT: &'static [usize] = &[0];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (j, q) in b[6..22].iter().enumerate() {
            out.u[j] = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
            out.u[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q5_0>();
    }
}
