//! Q4_1: blocks of 32 values, an f16 scale `d`, an f16 minimum `m` and 4-bit values: `d · q + m`. GGUF block: d, m (2 bytes each), 16 bytes of nibbles as in Q4_0.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16, legacy_nibbles};

/// The GGUF Q4_1 block type.
#[derive(Debug, Clone, Copy)]
pub struct Q4_1;

impl BlockFormat for Q4_1 {
    const TYPE: BlockType = BlockType::Q4_1;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 0,
        scales: Scales::Min,
    };
    const F16_AT: &'static [usize] = &[0, 2];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        out.dmin = le16(b, 2);
        legacy_nibbles(&b[4..20], None, &mut out.u);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q4_1>();
    }
}
