//! A walk over a GGUF header that reads only what candle's parser may refuse: the
//! tensor infos' GGML types. When candle cannot read a file, this names the first
//! tensor whose type it does not know, which candle's own error does not.

use std::io::{self, Read};

/// GGML's name of type id `id`, if it has one.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// The type ids candle (and so this backend) reads.
fn known(id: u32) -> bool {
    matches!(id, 0..=3 | 6..=15 | 30)
}

/// The first tensor of the header whose type is not known: (name, type id). `Ok(None)`
/// when every type is known.
pub fn first_unknown_type(r: &mut impl Read) -> io::Result<Option<(String, u32)>> {
    let Some((version, tensors, kvs)) = header(r)? else {
        return Ok(None);
    };
    for _ in 0..kvs {
        skip_string(r, version)?;
        let ty = u32_(r)?;
        skip_value(r, ty, version)?;
    }
    for _ in 0..tensors {
        let name = string(r, version)?;
        let dims = u32_(r)?;
        for _ in 0..dims {
            len(r, version)?;
        }
        let ty = u32_(r)?;
        u64_(r)?;
        if !known(ty) {
            return Ok(Some((name, ty)));
        }
    }
    Ok(None)
}

/// `general.alignment` of the header, when it is there as an integer.
pub fn alignment(r: &mut impl Read) -> io::Result<Option<u64>> {
    let Some((version, _tensors, kvs)) = header(r)? else {
        return Ok(None);
    };
    for _ in 0..kvs {
        let key = string(r, version)?;
        let ty = u32_(r)?;
        if key == "general.alignment" {
            return Ok(match ty {
                4 => Some(u64::from(u32_(r)?)),
                10 => Some(u64_(r)?),
                _ => None,
            });
        }
        skip_value(r, ty, version)?;
    }
    Ok(None)
}

/// (version, tensor count, key/value count) of a GGUF header; `None` without the magic.
fn header(r: &mut dyn Read) -> io::Result<Option<(u32, u64, u64)>> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Ok(None);
    }
    let version = u32_(r)?;
    let tensors = len(r, version)?;
    let kvs = len(r, version)?;
    Ok(Some((version, tensors, kvs)))
}

fn u32_(r: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_(r: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A count or length: u32 in GGUF version 1, u64 after.
fn len(r: &mut dyn Read, version: u32) -> io::Result<u64> {
    if version == 1 {
        u32_(r).map(u64::from)
    } else {
        u64_(r)
    }
}

fn skip(r: &mut dyn Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn skip_string(r: &mut dyn Read, version: u32) -> io::Result<()> {
    let n = len(r, version)?;
    skip(r, n)
}

fn string(r: &mut dyn Read, version: u32) -> io::Result<String> {
    let n = len(r, version)?;
    if n > 1 << 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "tensor name too long",
        ));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn skip_value(r: &mut dyn Read, ty: u32, version: u32) -> io::Result<()> {
    match ty {
        0 | 1 | 7 => skip(r, 1),
        2 | 3 => skip(r, 2),
        4..=6 => skip(r, 4),
        10..=12 => skip(r, 8),
        8 => skip_string(r, version),
        9 => {
            let elem = u32_(r)?;
            let n = len(r, version)?;
            for _ in 0..n {
                skip_value(r, elem, version)?;
            }
            Ok(())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown metadata value type {ty}"),
        )),
    }
}
