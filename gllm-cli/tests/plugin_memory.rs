//! The plugin frees what it allocates: buffers it hands to the host come back to
//! its own free. Alone in its test binary, so that no other test allocates in the
//! plugin (a panic's backtrace, say) while it counts.

mod plugin_support;

use plugin_support::{faulty_manifest, lib};

/// Bytes the faulty plugin's own allocator has live.
fn plugin_live_bytes() -> isize {
    // SAFETY: the faulty plugin exports this symbol with this signature; the library
    // is already loaded by the runtime (dlopen returns the same instance) and stays loaded.
    unsafe {
        let lib = libloading::Library::new(lib("gllm_plugin_faulty")).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn() -> isize> =
            lib.get(b"gllm_faulty_live_bytes").unwrap();
        let n = f();
        std::mem::forget(lib);
        n
    }
}

#[test]
fn plugin_memory_is_freed_by_the_plugin() {
    // 250k floats = 1 MB per row, 4 rows per call: 2 GB over 500 calls if the host
    // did not hand every buffer back to the plugin's free.
    let runtime = gllm::open_manifest(faulty_manifest(
        "mem.toml",
        &lib("gllm_plugin_faulty"),
        "dim = \"250000\"",
    ))
    .unwrap();
    let h = runtime.embedder_blocking("faulty").unwrap();
    let texts: Vec<String> = (0..4).map(|i| format!("text number {i}")).collect();
    for _ in 0..5 {
        h.embed_blocking(&texts).unwrap();
    }
    let before = plugin_live_bytes();
    for _ in 0..500 {
        let rows = h.embed_blocking(&texts).unwrap();
        assert_eq!(rows[3].embedding.len(), 250_000);
        assert_eq!(rows[3].embedding[7], rows[3].embedding[0] + 7.0);
    }
    let after = plugin_live_bytes();
    assert!(
        (after - before).abs() < 64 << 10,
        "the plugin holds {} bytes more after 500 calls",
        after - before
    );
}
