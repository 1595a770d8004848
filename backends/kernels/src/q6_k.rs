//! Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, each with a signed 8-bit scale `sc`; an f16 `d` per super-block: `(d · sc) · (q − 32)`, q 6-bit. GGUF block: ql[128] (low nibbles), qh[64] (high two bits), scales[16], d. In each half `n` of 128 values, value `32k + l` (k < 4, l < 32) takes nibble `k / 2` of `ql[64n + l + 32 (k % 2)]` and bits `2k..2k+2` of `qh[32n + l]`.
//!
//! Activations are quantized to Q8_K blocks (256 values, f32 scale, sums of 16); each
//! sub-block's dot product is exact in integers, scaled by its integer scale exactly
//! too, and the super-block's sum is scaled in f32.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q6_K block type.
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct Q6_K;

impl BlockFormat for Q6_K {
    const TYPE: BlockType = BlockType::Q6_K;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 2,
        scales: Scales::SubOffset {
            sub: 16,
            offset: 32,
        },
    };
    const F16_AT: &'static [usize] = &[208];

    fn decode(b: &[u8], out: &mut Decoded) {
        let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
        out.d = le16(b, 208);
        for (s, v) in out.sc.iter_mut().zip(scales) {
            *s = *v as i8;
        }
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let low = (ql[64 * n + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0F;
                    let high = (qh[32 * n + l] >> (2 * k)) & 3;
                    out.u[128 * n + 32 * k + l] = low | (high << 4);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q6_K>();
    }
}
