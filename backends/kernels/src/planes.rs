//! Bit planes of eight interleaved rows: how 32 values of each of the eight rows of a
//! group (a *chunk*) are stored, and how the kernels unpack them.
//!
//! Unpacked, a chunk is eight 32-byte words: word `k` holds values `4k..4k + 4` of
//! each row, row `r` at bytes `4r..4r + 4`, which is what one `u8 × i8` dot-product
//! instruction (`vpdpbusd`) against four broadcast activation bytes needs to advance
//! all eight rows. Packed, a value of `low + high` bits is split into a low plane of
//! `low` bits (2, 4 or 8) and a high plane of `high` bits (0-2), each stored the same
//! way: a plane of `b` bits is `b` words, word `k` of the unpacked chunk sitting in
//! plane word `k % b` at bit `b · (k / b)` of each byte. A chunk is therefore
//! `32 · (low + high)` bytes, as dense as GGUF's own blocks, and unpacking a word is a
//! shift and a mask per plane.

/// Values of each row in one chunk.
pub const CHUNK: usize = 32;

/// Bytes of one packed chunk of eight rows.
pub const fn chunk_bytes(low: u32, high: u32) -> usize {
    32 * (low + high) as usize
}

/// (byte, shift) of unpacked word `k`, byte `bw` in a plane of `bits` bits starting
/// at byte `base`.
#[inline]
fn spot(base: usize, bits: u32, k: usize, bw: usize) -> (usize, u32) {
    let b = bits as usize;
    (base + 32 * (k % b) + bw, bits * (k / b) as u32)
}

/// Stores value `v` (< 2^(low + high)) as element `e` (< 32) of row `lane` (< 8).
#[inline]
pub fn put(chunk: &mut [u8], low: u32, high: u32, lane: usize, e: usize, v: u8) {
    let (k, bw) = (e / 4, 4 * lane + e % 4);
    let (byte, shift) = spot(0, low, k, bw);
    chunk[byte] |= (v & mask(low)) << shift;
    if high > 0 {
        let (byte, shift) = spot(32 * low as usize, high, k, bw);
        chunk[byte] |= (v >> low) << shift;
    }
}

/// Stores `values` (one chunk's worth, 32) as row `lane` of the chunk.
#[inline]
pub fn put_row(chunk: &mut [u8], low: u32, high: u32, lane: usize, values: &[u8]) {
    for (e, &v) in values.iter().enumerate().take(CHUNK) {
        put(chunk, low, high, lane, e, v);
    }
}

/// Element `e` of row `lane`.
#[inline]
pub fn get(chunk: &[u8], low: u32, high: u32, lane: usize, e: usize) -> u8 {
    let (k, bw) = (e / 4, 4 * lane + e % 4);
    let (byte, shift) = spot(0, low, k, bw);
    let mut v = (chunk[byte] >> shift) & mask(low);
    if high > 0 {
        let (byte, shift) = spot(32 * low as usize, high, k, bw);
        v |= ((chunk[byte] >> shift) & mask(high)) << low;
    }
    v
}

#[inline]
const fn mask(bits: u32) -> u8 {
    if bits >= 8 { 0xFF } else { (1u8 << bits) - 1 }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The eight unpacked words of the chunk at `c` (see the module docs). `LO` and
    /// `HI` are constants, so the loops and shifts fold away.
    #[inline(always)]
    pub unsafe fn unpack<const LO: u32, const HI: u32>(c: *const u8) -> [__m256i; 8] {
        unsafe {
            let mut w = [_mm256_setzero_si256(); 8];
            if LO == 8 {
                for (k, wk) in w.iter_mut().enumerate() {
                    *wk = _mm256_loadu_si256(c.add(32 * k) as *const __m256i);
                }
            } else {
                let lo_mask = _mm256_set1_epi8(((1u32 << LO) - 1) as i8);
                let planes: [__m256i; 4] = std::array::from_fn(|p| {
                    if p < LO as usize {
                        _mm256_loadu_si256(c.add(32 * p) as *const __m256i)
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                for (k, wk) in w.iter_mut().enumerate() {
                    let v = planes[k % LO as usize];
                    let shift = LO * (k as u32 / LO);
                    *wk = _mm256_and_si256(srl(v, shift), lo_mask);
                }
            }
            if HI > 0 {
                let base = c.add(32 * LO as usize);
                let planes: [__m256i; 2] = std::array::from_fn(|p| {
                    if p < HI as usize {
                        _mm256_loadu_si256(base.add(32 * p) as *const __m256i)
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                for (k, wk) in w.iter_mut().enumerate() {
                    let shift = HI * (k as u32 / HI);
                    let bits = _mm256_and_si256(
                        planes[k % HI as usize],
                        _mm256_set1_epi8(((((1u32 << HI) - 1) << shift) & 0xFF) as u8 as i8),
                    );
                    // Move bits `shift..shift + HI` of each byte to `LO..LO + HI`
                    // (16-bit shifts: the masked bits never cross into the next byte).
                    let moved = if shift <= LO {
                        sll(bits, LO - shift)
                    } else {
                        srl(bits, shift - LO)
                    };
                    *wk = _mm256_or_si256(*wk, moved);
                }
            }
            w
        }
    }

    #[inline(always)]
    unsafe fn srl(v: __m256i, n: u32) -> __m256i {
        unsafe {
            match n {
                0 => v,
                _ => _mm256_srl_epi16(v, _mm_cvtsi32_si128(n as i32)),
            }
        }
    }

    #[inline(always)]
    unsafe fn sll(v: __m256i, n: u32) -> __m256i {
        unsafe {
            match n {
                0 => v,
                _ => _mm256_sll_epi16(v, _mm_cvtsi32_si128(n as i32)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_stores_and_reads_back_every_value() {
        for (low, high) in [(2, 0), (2, 1), (4, 0), (4, 1), (4, 2), (8, 0)] {
            let mut chunk = vec![0u8; chunk_bytes(low, high)];
            let val =
                |lane: usize, e: usize| ((lane * 37 + e * 11 + 5) % (1 << (low + high))) as u8;
            for lane in 0..8 {
                for e in 0..CHUNK {
                    put(&mut chunk, low, high, lane, e, val(lane, e));
                }
            }
            for lane in 0..8 {
                for e in 0..CHUNK {
                    assert_eq!(
                        get(&chunk, low, high, lane, e),
                        val(lane, e),
                        "{low}+{high}"
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            if crate::isa::Isa::detect() != crate::isa::Isa::Scalar {
                let words = unsafe { unpack_any(low, high, &chunk) };
                for (k, word) in words.iter().enumerate() {
                    for (b, v) in word.iter().enumerate() {
                        let (lane, e) = (b / 4, 4 * k + b % 4);
                        assert_eq!(*v, val(lane, e), "simd {low}+{high} word {k} byte {b}");
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_any(low: u32, high: u32, chunk: &[u8]) -> [[u8; 32]; 8] {
        use std::arch::x86_64::*;
        let p = chunk.as_ptr();
        let w = unsafe {
            match (low, high) {
                (2, 0) => x86::unpack::<2, 0>(p),
                (2, 1) => x86::unpack::<2, 1>(p),
                (4, 0) => x86::unpack::<4, 0>(p),
                (4, 1) => x86::unpack::<4, 1>(p),
                (4, 2) => x86::unpack::<4, 2>(p),
                _ => x86::unpack::<8, 0>(p),
            }
        };
        let mut out = [[0u8; 32]; 8];
        for (o, v) in out.iter_mut().zip(w) {
            unsafe { _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, v) };
        }
        out
    }
}
