//! Q5_0: blocks of 32 values, an f16 scale `d` and 5-bit values: `d · (q − 16)`. GGUF block: d, the 32 fifth bits (a little-endian u32, bit j for value j), 16 bytes of low nibbles as in Q4_0.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16, le32, legacy_nibbles};

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
        legacy_nibbles(&b[6..22], Some(le32(b, 2)), &mut out.u);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q5_0>();
    }
}
