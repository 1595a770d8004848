//! Checks on a finished `gllm` process, for the tests that run the binary.

use std::process::Output;

/// Fails when the process panicked (a panic is never an answer, even to bad input).
pub fn assert_no_panic(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "gllm panicked: {stderr}");
}

/// The JSON the process printed; fails when it failed or printed something else.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "gllm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// What the process printed; fails when it failed.
pub fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gllm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error the process printed; fails when it succeeded.
pub fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
