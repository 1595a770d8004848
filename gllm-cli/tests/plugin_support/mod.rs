//! Shared by the plugin test binaries: builds the plugin libraries and writes manifests naming them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gllm_testkit::fixture;

/// Builds the plugin cdylibs (once per test binary) and returns the directory holding them.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            // The whole workspace with all targets: the same feature resolution as
            // `cargo test --workspace`, so nothing is rebuilt but the plugin libraries
            // (building `-p` alone would resolve features differently and rebuild Burn).
            .args(["build", "--release", "--workspace", "--all-targets"])
            .current_dir(gllm_testkit::workspace_root())
            .status()
            .expect("run cargo build for the plugins");
        assert!(status.success(), "building the plugins failed");
        // <target>/release/deps/<this test> -> <target>/release
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(Path::parent).unwrap().to_path_buf()
    })
}

pub fn lib(name: &str) -> PathBuf {
    let file = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let p = plugin_dir().join(file);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// A copy of a library under a new name, so that it is loaded (and its entry point run) afresh.
pub fn copy_of(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gllm-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(format!(
        "{tag}-{}",
        lib(name).file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(lib(name), &dest).unwrap();
    dest
}

pub fn write_manifest(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gllm-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn bert_manifest() -> PathBuf {
    write_manifest(
        "bert.toml",
        &format!(
            r#"
[plugins]
libraries = ["{lib}"]

[[models]]
id = "tiny-bert"
task = "embed"
path = "{bert}"
backends = ["plugin-bert"]
devices = ["gpu", "cpu"]

[[models]]
id = "tiny-ce"
task = "rerank"
path = "{ce}"
backends = ["plugin-bert"]
devices = ["cpu"]
"#,
            lib = lib("gllm_plugin_bert").display(),
            bert = fixture("tiny-bert").display(),
            ce = fixture("tiny-cross-encoder").display(),
        ),
    )
}

pub fn faulty_manifest(name: &str, library: &Path, options: &str) -> PathBuf {
    write_manifest(
        name,
        &format!(
            r#"
[plugins]
libraries = ["{lib}"]

[[models]]
id = "faulty"
task = "embed"
path = "{bert}"
backends = ["faulty"]
devices = ["gpu", "cpu"]
[models.options]
{options}

[[models]]
id = "other"
task = "embed"
path = "{bert}"
backends = ["faulty"]
devices = ["cpu"]
"#,
            lib = library.display(),
            bert = fixture("tiny-bert").display(),
        ),
    )
}
