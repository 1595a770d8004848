//! Libraries that are not (compatible) gllm plugins are refused with clear errors.
//! Alone in its test binary: it sets the variable the faulty plugin reads at entry.

mod plugin_support;

use std::path::{Path, PathBuf};

use plugin_support::{copy_of, faulty_manifest, write_manifest};

fn load_error(manifest: &Path) -> String {
    match gllm::open_manifest(manifest) {
        Ok(_) => panic!("{} loaded", manifest.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_libraries_are_refused_with_clear_errors() {
    // no entry symbol: a library that is not a plugin (libm)
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("libm.so.6");
    let err = load_error(&faulty_manifest("nosym.toml", &libm, ""));
    assert!(err.contains("no `gllm_plugin_entry` symbol"), "{err}");
    assert!(err.contains("libm.so.6"), "{err}");

    // not a library at all
    let junk = write_manifest("junk.so", "not an ELF file");
    let err = load_error(&faulty_manifest("junk.toml", &junk, ""));
    assert!(err.contains("cannot load"), "{err}");

    // spoiled descriptors: one fresh copy of the library per mode
    for (mode, want) in [
        ("bad-magic", "bad magic 0x00000000deadbeef"),
        (
            "abi-major",
            "plugin ABI version 2.0 is incompatible with this gllm's ABI 1.0",
        ),
    ] {
        let copy = copy_of("gllm_plugin_faulty", mode);
        // SAFETY: this test binary runs this test alone on this variable; it is read
        // by the plugin's entry point during the load below.
        unsafe { std::env::set_var("GLLM_FAULTY_PLUGIN", mode) };
        let err = load_error(&faulty_manifest(&format!("{mode}.toml"), &copy, ""));
        unsafe { std::env::remove_var("GLLM_FAULTY_PLUGIN") };
        assert!(err.contains(want), "{mode}: {err}");
        assert!(err.contains(&copy.display().to_string()), "{mode}: {err}");
    }
}
