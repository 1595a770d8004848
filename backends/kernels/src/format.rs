//! What a GGUF block type is to the kernels: its GGML identity, how one block decodes,
//! and which packed layout it uses. Each block type's file implements [`BlockFormat`].

/// The GGUF block types with CPU kernels here.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockType {
    /// 4-bit, 32-value blocks: `d·(q − 8)`.
    Q4_0,
    /// 4-bit with a block minimum: `d·q + m`.
    Q4_1,
    /// 5-bit: `d·(q − 16)`.
    Q5_0,
    /// 5-bit with a block minimum: `d·q + m`.
    Q5_1,
    /// 8-bit signed: `d·q`.
    Q8_0,
    /// 2-bit k-quant: sub-blocks of 16 with 4-bit scales and minimums.
    Q2_K,
    /// 3-bit k-quant: sub-blocks of 16 with 6-bit scales, `(d·sc)·(q − 4)`.
    Q3_K,
    /// 4-bit k-quant: sub-blocks of 32 with 6-bit scales and minimums.
    Q4_K,
    /// 5-bit k-quant: as Q4_K with a fifth bit.
    Q5_K,
    /// 6-bit k-quant: sub-blocks of 16 with 8-bit scales, `(d·sc)·(q − 32)`.
    Q6_K,
}

impl BlockType {
    /// Every type, legacy first.
    pub const ALL: [BlockType; 10] = [
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
        BlockType::Q2_K,
        BlockType::Q3_K,
        BlockType::Q4_K,
        BlockType::Q5_K,
        BlockType::Q6_K,
    ];

    /// GGML's name of the type ("Q4_K").
    pub fn name(self) -> &'static str {
        match self {
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q5_1 => "Q5_1",
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q2_K => "Q2_K",
            BlockType::Q3_K => "Q3_K",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q5_K => "Q5_K",
            BlockType::Q6_K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        if self.is_k() { 256 } else { 32 }
    }

    /// Bytes per block in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q8_0 => 34,
            BlockType::Q2_K => 84,
            BlockType::Q3_K => 110,
            BlockType::Q4_K => 144,
            BlockType::Q5_K => 176,
            BlockType::Q6_K => 210,
        }
    }

    /// A k-quant (256-value super-blocks, Q8_K activations).
    pub fn is_k(self) -> bool {
        matches!(
            self,
            BlockType::Q2_K | BlockType::Q3_K | BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K
        )
    }
}

impl std::fmt::Display for BlockType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a packed block's unsigned values `u` become weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scales {
    /// Legacy: `d · (u − offset)`.
    Offset(i32),
    /// Legacy: `d · u + min`.
    Min,
    /// K-quant, sub-blocks of `sub` values: `(d · sc) · u − dmin · m`.
    SubMin {
        /// Values per sub-block (16 or 32).
        sub: usize,
    },
    /// K-quant, sub-blocks of `sub` values: `(d · sc) · (u − offset)`.
    SubOffset {
        /// Values per sub-block (16 or 32).
        sub: usize,
        /// The offset of the stored values.
        offset: i32,
    },
}

/// The packed form of a block type: bits of each unsigned value (a low part of 2, 4 or
/// 8 bits and a high part of 0-2 bits, stored as separate planes, see
/// [`crate::planes`]) and how scales apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bits of the low plane: 2, 4 or 8.
    pub low_bits: u32,
    /// Bits of the high plane: 0, 1 or 2.
    pub high_bits: u32,
    /// How the scales apply.
    pub scales: Scales,
}

impl Layout {
    /// The offset of the stored values (offset types), 0 for the minimum types.
    pub fn offset(&self) -> i32 {
        match self.scales {
            Scales::Offset(offset) | Scales::SubOffset { offset, .. } => offset,
            Scales::Min | Scales::SubMin { .. } => 0,
        }
    }

    /// Values per sub-block (the whole block for the legacy types).
    pub fn sub(&self) -> usize {
        match self.scales {
            Scales::Offset(_) | Scales::Min => 32,
            Scales::SubMin { sub } | Scales::SubOffset { sub, .. } => sub,
        }
    }
}

/// One GGUF block decoded: unsigned values and the scales that make them weights.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// f16 bits of the block scale `d`.
    pub d: u16,
    /// f16 bits of the block minimum ([`Scales::Min`]) or of the minimums' scale
    /// `dmin` ([`Scales::SubMin`]); unused otherwise.
    pub dmin: u16,
    /// Integer scale of each sub-block (k-quants).
    pub sc: [i8; 16],
    /// Integer minimum of each sub-block ([`Scales::SubMin`]).
    pub m: [i8; 16],
    /// The unsigned values, `block_values` of them.
    pub u: [u8; 256],
}

impl Default for Decoded {
    fn default() -> Self {
        Self {
            d: 0,
            dmin: 0,
            sc: [0; 16],
            m: [0; 16],
            u: [0; 256],
        }
    }
}

/// One GGUF block type: its identity, its packed layout and its block decoding. Adding a
/// type is one file implementing this, plus its tests (see [`crate::q4_0`]).
pub trait BlockFormat {
    /// The type.
    const TYPE: BlockType;
    /// Its packed layout.
    const LAYOUT: Layout;
    /// Byte offsets of the block's f16 fields (tests and benchmarks make valid blocks
    /// by writing finite scales there).
    const F16_AT: &'static [usize];
    /// Decodes one block of `TYPE.block_bytes()` bytes.
    fn decode(block: &[u8], out: &mut Decoded);
}

/// Little-endian u16 at `at`.
#[inline]
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// f16 bits as f32.
#[inline]
pub(crate) fn f16(bits: u16) -> f32 {
    ::half::f16::from_bits(bits).to_f32()
}

/// Values of a legacy block's 16 nibble bytes: byte `j` holds value `j` (low nibble)
/// and `j + 16` (high); `fifth`, where given, holds bit 4 of value `j` at bit `j`.
#[inline]
pub(crate) fn legacy_nibbles(qs: &[u8], fifth: Option<u32>, u: &mut [u8]) {
    let qh = fifth.unwrap_or(0);
    for (j, q) in qs[..16].iter().enumerate() {
        u[j] = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        u[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
}

/// A little-endian u32 at `at`.
#[inline]
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes every block of a row-major tensor of `rows` rows of `nb` blocks of type `F`,
/// calling `f(gb, lane, block)` for row `8g + lane`'s block `b`, where `gb = g · nb + b`
/// indexes the (group, block) cells of the packed layouts.
pub(crate) fn decode_blocks<F: BlockFormat>(
    rows: usize,
    nb: usize,
    data: &[u8],
    mut f: impl FnMut(usize, usize, &Decoded),
) {
    let bb = F::TYPE.block_bytes();
    let mut dec = Decoded::default();
    for r in 0..rows {
        let (g, lane) = (r / crate::grouped::GROUP, r % crate::grouped::GROUP);
        for b in 0..nb {
            F::decode(&data[(r * nb + b) * bb..(r * nb + b + 1) * bb], &mut dec);
            f(g * nb + b, lane, &dec);
        }
    }
}
