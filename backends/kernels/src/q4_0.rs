//! Q4_0: blocks of 32 values, an f16 scale `d` and 4-bit values: `d · (q − 8)`. GGUF block: d (2 bytes), 16 bytes whose low nibbles are values 0-15 and high nibbles values 16-31.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16, legacy_nibbles};

/// The GGUF Q4_0 block type.
#[derive(Debug, Clone, Copy)]
pub struct Q4_0;

impl BlockFormat for Q4_0 {
    const TYPE: BlockType = BlockType::Q4_0;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 0,
        scales: Scales::Offset(8),
    };
    const F16_AT: &'static [usize] = &[0];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        legacy_nibbles(&b[2..18], None, &mut out.u);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q4_0>();
    }
}
