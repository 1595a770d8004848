//! The files of a Hugging Face checkpoint directory: the shards of a sharded
//! checkpoint, and the JSON files beside the weights (sentence-transformers modules).

use std::path::{Path, PathBuf};

use gllm_api::BackendError;

/// A JSON file of a checkpoint; one that cannot be read or parsed is an invalid
/// model naming the file.
pub fn read_json(path: &Path) -> Result<serde_json::Value, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackendError::invalid_model(format!("{}: cannot read: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        BackendError::invalid_model(format!("{}: not valid JSON: {e}", path.display()))
    })
}

/// The shard files named by a `model.safetensors.index.json`, each once, in order.
/// A shard must be a plain file name in `dir`: a path (`../x`, `/etc/x`, `a/b`) or a
/// hidden name is an invalid model, so an index cannot make gllm map files elsewhere.
pub fn shard_paths(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let bad = BackendError::invalid_model;
    let text = std::fs::read_to_string(index)
        .map_err(|e| bad(format!("{}: cannot read: {e}", index.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not valid JSON: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(format!("{}: no `weight_map` object", index.display())))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            bad(format!(
                "{}: weight_map entry `{name}` is not a file name",
                index.display()
            ))
        })?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(format!(
                "{}: shard name `{file}` is not a plain file name",
                index.display()
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err(bad(format!(
            "{}: `weight_map` lists no files",
            index.display()
        )));
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(tag: &str, text: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("gllm-arch-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("model.safetensors.index.json");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn shards_are_plain_names_listed_once_in_order() {
        let (dir, path) = index(
            "ok",
            r#"{"weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}}"#,
        );
        let files = shard_paths(&dir, &path).expect("valid");
        assert_eq!(
            files,
            vec![dir.join("m-1.safetensors"), dir.join("m-2.safetensors")]
        );
        for bad in [
            "../x.safetensors",
            "/etc/passwd",
            "a/b.safetensors",
            ".hidden",
        ] {
            let (dir, path) = index("bad", &format!(r#"{{"weight_map": {{"a": "{bad}"}}}}"#));
            let e = shard_paths(&dir, &path).expect_err(bad);
            assert!(e.message.contains("is not a plain file name"), "{bad}: {e}");
        }
        let (dir, path) = index("empty", r#"{"weight_map": {}}"#);
        let e = shard_paths(&dir, &path).expect_err("empty");
        assert!(e.message.contains("lists no files"), "{e}");
    }
}
