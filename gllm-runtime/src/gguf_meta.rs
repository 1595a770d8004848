//! Reads the metadata (key/value) section of a GGUF file: the architecture, the
//! tokenizer (`tokenizer.ggml.*`) and the chat template. Tensor data is not read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type.
    UInt(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::UInt(v) => Some(*v),
            Self::Int(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct GgufMetadata {
    /// Format version (2 or 3).
    pub version: u32,
    /// Number of tensors the file declares.
    pub tensor_count: u64,
    /// Every key/value pair.
    pub values: BTreeMap<String, MetaValue>,
}

/// A GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct GgufError {
    path: String,
    message: String,
}

impl GgufMetadata {
    /// Reads the metadata of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Self, GgufError> {
        let label = path.display().to_string();
        let err = |message: String| GgufError {
            path: label.clone(),
            message,
        };
        let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let remaining = file
            .metadata()
            .map_err(|e| err(format!("cannot read its size: {e}")))?
            .len();
        Self::parse(BufReader::with_capacity(1 << 20, file), remaining, &label)
    }

    /// Reads GGUF metadata from bytes in memory (`label` names them in errors).
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Self, GgufError> {
        Self::parse(bytes, bytes.len() as u64, label)
    }

    /// Reads the metadata from `inner`, which holds `remaining` bytes: no count read
    /// from it may promise more.
    fn parse(inner: impl Read, remaining: u64, label: &str) -> Result<Self, GgufError> {
        let err = |message: String| GgufError {
            path: label.to_string(),
            message,
        };
        let mut r = Reader { inner, remaining };
        let magic = r.bytes::<4>().map_err(&err)?;
        if &magic != b"GGUF" {
            return Err(err("not a GGUF file (bad magic)".into()));
        }
        let version = r.u32().map_err(&err)?;
        if !(2..=3).contains(&version) {
            return Err(err(format!("unsupported GGUF version {version}")));
        }
        let tensor_count = r.u64().map_err(&err)?;
        let kv_count = r.u64().map_err(&err)?;
        if kv_count > 1 << 20 {
            return Err(err(format!("implausible metadata count {kv_count}")));
        }
        let mut values = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string().map_err(&err)?;
            let ty = r.u32().map_err(&err)?;
            let value = r
                .value(ty, 0)
                .map_err(|e| err(format!("metadata `{key}`: {e}")))?;
            values.insert(key, value);
        }
        // candle divides by the alignment; GGUF requires a power of two.
        if let Some(v) = values.get("general.alignment") {
            match v.as_u64() {
                Some(a) if a.is_power_of_two() => {}
                _ => {
                    return Err(err(format!(
                        "general.alignment is {v:?}, not a power of two"
                    )));
                }
            }
        }
        Ok(Self {
            version,
            tensor_count,
            values,
        })
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.values.get(key)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// An unsigned integer value.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.str("general.architecture")
    }
}

struct Reader<R: Read> {
    inner: R,
    /// Bytes of the file not read yet: no count read from it may promise more.
    remaining: u64,
}

impl<R: Read> Reader<R> {
    fn take(&mut self, n: u64) -> Result<(), String> {
        self.remaining = self
            .remaining
            .checked_sub(n)
            .ok_or_else(|| format!("truncated file: {n} more bytes promised"))?;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N as u64)?;
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| format!("truncated file: {e}"))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > 1 << 26 {
            return Err(format!("implausible string length {len}"));
        }
        self.take(len)?;
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("truncated file: {e}"))?;
        // Token strings of some tokenizers hold invalid UTF-8 fragments: keep them lossily.
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue, String> {
        Ok(match ty {
            0 => MetaValue::UInt(u8::from_le_bytes(self.bytes()?) as u64),
            1 => MetaValue::Int(i8::from_le_bytes(self.bytes()?) as i64),
            2 => MetaValue::UInt(u16::from_le_bytes(self.bytes()?) as u64),
            3 => MetaValue::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => MetaValue::UInt(self.u32()? as u64),
            5 => MetaValue::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err("arrays nested too deeply".into());
                }
                let inner = self.u32()?;
                let count = self.u64()?;
                // The smallest an element can be on disk: its value, or a string's length.
                let least = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    9 => 12,
                    _ => 8,
                };
                if count > 1 << 24 || count.saturating_mul(least) > self.remaining {
                    return Err(format!(
                        "implausible array length {count} ({} bytes left in the file)",
                        self.remaining
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(inner, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::UInt(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format!("unknown value type {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with no tensors and the given key/values (type id, raw value bytes).
    fn gguf(kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in kvs {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        b
    }

    fn read(tag: &str, bytes: &[u8]) -> Result<GgufMetadata, GgufError> {
        let path =
            std::env::temp_dir().join(format!("gguf-meta-{tag}-{}.gguf", std::process::id()));
        std::fs::write(&path, bytes).expect("write");
        let r = GgufMetadata::read(&path);
        let _ = std::fs::remove_file(&path);
        r
    }

    fn str_value(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    #[test]
    fn reads_values_and_a_valid_alignment() {
        let m = read(
            "ok",
            &gguf(&[
                ("general.architecture", 8, str_value("qwen2")),
                ("general.alignment", 4, 32u32.to_le_bytes().to_vec()),
            ]),
        )
        .expect("valid");
        assert_eq!(m.architecture(), Some("qwen2"));
        assert_eq!(m.u64("general.alignment"), Some(32));
    }

    #[test]
    fn an_alignment_of_zero_or_not_a_power_of_two_is_refused() {
        for a in [0u32, 24] {
            let e = read(
                &format!("align{a}"),
                &gguf(&[("general.alignment", 4, a.to_le_bytes().to_vec())]),
            )
            .expect_err("invalid alignment");
            assert!(e.to_string().contains("not a power of two"), "{e}");
        }
    }

    #[test]
    fn an_array_longer_than_the_file_is_refused_before_allocating() {
        // 2^24 u64 elements promised by a file of a few dozen bytes.
        let mut v = 10u32.to_le_bytes().to_vec();
        v.extend((1u64 << 24).to_le_bytes());
        let e = read("array", &gguf(&[("tokenizer.ggml.scores", 9, v)])).expect_err("invalid");
        assert!(
            e.to_string().contains("implausible array length 16777216"),
            "{e}"
        );
        // A string longer than what is left.
        let mut v = (1000u64).to_le_bytes().to_vec();
        v.extend(b"short");
        let e = read("string", &gguf(&[("general.name", 8, v)])).expect_err("invalid");
        assert!(e.to_string().contains("truncated file"), "{e}");
    }
}
