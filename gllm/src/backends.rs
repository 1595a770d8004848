//! The built-in backends compiled into this build (cargo features, all on by default).
//!
//! `inventory` registrations live in the backend crates; a crate that nothing
//! references is dropped by the linker together with its registration. This is
//! the one place that references every enabled backend crate: the runtime itself links
//! none, so a program without this crate (or its own references) has no built-in backend.

/// Touches each enabled backend crate's factory so that the linker keeps it (and its
/// registration). Call it once before building a registry ([`crate::Runtime`] and the
/// `open` functions of this crate do); a binary that builds a `gllm_runtime::Runtime`
/// itself calls it first.
pub fn link_builtin_backends() {
    #[cfg(feature = "burn-bert")]
    std::hint::black_box(&burn_bert::FACTORY);
    #[cfg(feature = "candle-qwen2")]
    std::hint::black_box(&candle_qwen2::FACTORY);
    #[cfg(feature = "burn-qwen2")]
    std::hint::black_box(&burn_qwen2::FACTORY);
}

/// Names of the backends this build was compiled with (by cargo feature).
pub fn builtin_backend_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "burn-bert") {
        names.push("burn-bert");
    }
    if cfg!(feature = "candle-qwen2") {
        names.push("candle-qwen2");
    }
    if cfg!(feature = "burn-qwen2") {
        names.push("burn-qwen2");
    }
    names
}
