//! Q8_0: blocks of 32 values, an f16 scale `d` and signed bytes: `d · q`. Stored here as `q + 128`. GGUF block: d, 32 signed bytes.
//!
//! Activations are quantized to Q8_0 blocks (32 values); each block's dot product is exact in integers.

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

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q8_0>();
    }
}
