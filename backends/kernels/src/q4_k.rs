//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32, each with a 6-bit scale `sc` and minimum `m`; f16 `d` and `dmin` per super-block: `(d · sc) · q − dmin · m`, q 4-bit. GGUF block: d, dmin, scales[12] (sub-blocks 0-3: low six bits of bytes 0-3 (sc) and 4-7 (m); 4-7: nibbles of bytes 8-11 with the top two bits of bytes 0-7), qs[128]: values `64j + l` and `64j + 32 + l` are the low and high nibble of `qs[32j + l]`.
//!
//! Activations are quantized to Q8_K blocks (256 values, f32 scale, sums of 16); each
//! sub-block's dot product is exact in integers, scaled by its integer scale exactly
//! too, and the super-block's sum is scaled in f32.

use crate::format::{BlockFormat, BlockType, Decoded, Layout, Scales, le16};

/// The GGUF Q4_K block type.
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct Q4_K;

impl BlockFormat for Q4_K {
    const TYPE: BlockType = BlockType::Q4_K;
    const LAYOUT: Layout = Layout {
        low_bits: 4,
        high_bits: 0,
        scales: Scales::SubMin { sub: 32 },
    };
    const F16_AT: &'static [usize] = &[0, 2];

    fn decode(b: &[u8], out: &mut Decoded) {
        out.d = le16(b, 0);
        out.dmin = le16(b, 2);
        let (sc, m) = scale_min_k4(&b[4..16]);
        out.sc[..8].copy_from_slice(&sc);
        out.m[..8].copy_from_slice(&m);
        let qs = &b[16..144];
        for j in 0..4 {
            for l in 0..32 {
                out.u[64 * j + l] = qs[32 * j + l] & 0x0F;
                out.u[64 * j + 32 + l] = qs[32 * j + l] >> 4;
            }
        }
    }
}

/// The eight 6-bit scales and minimums of a Q4_K/Q5_K super-block (llama.cpp's
/// `get_scale_min_k4` for j = 0..8).
pub(crate) fn scale_min_k4(q: &[u8]) -> ([i8; 8], [i8; 8]) {
    let (mut sc, mut m) = ([0i8; 8], [0i8; 8]);
    for j in 0..8 {
        let (s, mn) = if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            (
                (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
                (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
            )
        };
        sc[j] = s as i8;
        m[j] = mn as i8;
    }
    (sc, m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn packs_dequantizes_and_multiplies_like_the_references() {
        crate::testing::check_format::<super::Q4_K>();
    }
}
