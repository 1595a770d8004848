//! Helpers of strict `config.json` reading: each backend parses its own
//! architecture's keys, and every error names the file and the key.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use gllm_api::BackendError;

/// An invalid-model error about the config file at `path`: `"{path}: {what}"`.
pub fn invalid(path: &Path, what: impl Display) -> BackendError {
    BackendError::invalid_model(format!("{}: {what}", path.display()))
}

/// An unsupported error about the config file at `path`: `"{path}: {what}"`
/// (a valid config of something the backend does not run).
pub fn unsupported(path: &Path, what: impl Display) -> BackendError {
    BackendError::unsupported(format!("{}: {what}", path.display()))
}

/// A positive integer the architecture needs: a missing `key` or a zero is
/// an invalid-model error naming it.
pub fn required(path: &Path, key: &str, value: Option<usize>) -> Result<usize, BackendError> {
    match value {
        Some(0) => Err(invalid(path, format_args!("`{key}` must be positive"))),
        Some(v) => Ok(v),
        None => Err(invalid(path, format_args!("missing `{key}`"))),
    }
}

/// Reads `config.json` in `dir`: its path (for messages) and its text. A file
/// that cannot be read is an invalid-model error naming it.
pub fn read(dir: &Path) -> Result<(PathBuf, String), BackendError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| invalid(&path, format_args!("cannot read: {e}")))?;
    Ok((path, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gllm_api::ErrorKind;

    #[test]
    fn required_values_are_named() {
        let p = Path::new("m/config.json");
        assert_eq!(required(p, "k", Some(3)).ok(), Some(3));
        let e = required(p, "k", Some(0)).expect_err("zero");
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.message, "m/config.json: `k` must be positive");
        let e = required(p, "k", None).expect_err("missing");
        assert_eq!(e.message, "m/config.json: missing `k`");
    }

    #[test]
    fn errors_name_the_file() {
        let p = Path::new("config.json");
        let e = unsupported(p, "model_type `x`");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, "config.json: model_type `x`");
        assert_eq!(invalid(p, 7).kind, ErrorKind::InvalidModel);
    }

    #[test]
    fn reads_the_file_of_a_directory() {
        let dir = std::env::temp_dir().join(format!("burn-support-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let e = read(&dir).expect_err("no file");
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert!(e.message.contains("config.json: cannot read"), "{e}");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        let (path, text) = read(&dir).expect("read");
        assert_eq!((path, text.as_str()), (dir.join("config.json"), "{}"));
    }
}
