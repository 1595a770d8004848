//! Q5_K: as Q4_K with a fifth bit: `(d · sc) · q − dmin · m`, q 5-bit. GGUF block: d, dmin, scales[12] (as Q4_K), qh[32], qs[128]: value `64j + l` is the low nibble of `qs[32j + l]` with bit `2j` of `qh[l]`, value `64j + 32 + l` the high nibble with bit `2j + 1`.
//!
//! Activations are quantized to Q8_K blocks (256 values, f32 scale, sums of 16); each
//! sub-block's dot product is exact in integers, scaled by its integer scale exactly
//! too, and the super-block's sum is scaled in f32.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};
use crate::q4_k::scale_min_k4;

/// The GGUF Q5_K block type.
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct Q5_K;

impl BlockFormat for Q5_K {
    const TYPE: BlockType = BlockType::Q5_K;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 1,
        scales: Scales::SubMin { sub: 32 },
    };
    const F16_AT: &'static [usize] = &[0, 2];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        out.dmin = le16(b, 2);
        let (sc, m) = scale_min_k4(&b[4..16]);
        out.sc[..8].copy_from_slice(&sc);
        out.m[..8].copy_from_slice(&m);
        let (qh, qs) = (&b[16..48], &b[48..176]);
        for j in 0..4 {
            for l in 0..32 {
                let (lo, hi) = ((qh[l] >> (2 * j)) & 1, (qh[l] >> (2 * j + 1)) & 1);
                out.u[64 * j + l] = (qs[32 * j + l] & 0x0F) | (lo << 4);
                out.u[64 * j + 32 + l] = (qs[32 * j + l] >> 4) | (hi << 4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q5_K>();
    }
}
