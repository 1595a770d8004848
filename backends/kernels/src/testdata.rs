//! Random but valid GGUF blocks, for tests and benchmarks of the kernels.

use crate::format::BlockType;
use crate::quant::QuantMatrix;

/// A xorshift stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// `rows * cols / block` random GGUF blocks of type `ty`: random bytes with finite f16
/// scales (a positive `d`; a second f16 field, a minimum or `dmin`, of either sign).
pub fn random_blocks(ty: BlockType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let (bb, n) = (ty.block_bytes(), rows * cols / ty.block_values());
    let mut rng = Rng::new(seed);
    let mut out = vec![0u8; n * bb];
    for block in out.chunks_exact_mut(bb) {
        for b in block.iter_mut() {
            *b = rng.next() as u8;
        }
        for (i, at) in QuantMatrix::f16_fields(ty).iter().enumerate() {
            let v = if i == 0 {
                rng.uniform(0.002, 0.02)
            } else {
                rng.uniform(-0.02, 0.02)
            };
            block[*at..*at + 2].copy_from_slice(&::half::f16::from_f32(v).to_le_bytes());
        }
    }
    out
}
