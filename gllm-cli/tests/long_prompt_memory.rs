//! A 32k-token prompt to tiny-qwen2 (context 32768) completes on both decoder backends
//! with the process's peak RSS under 2 GB: the runtime feeds prompts in chunks of 512
//! positions, so no backend builds [heads × n × n] attention scores for the whole
//! prompt (which for 32k tokens would be about 17 GB per tensor). Each run is its own
//! `gllm generate` process, whose peak (VmHWM) is read while it runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use gllm_testkit::fixture;

/// Peak resident memory of a running process, in bytes (Linux `VmHWM`).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn a_32k_token_prompt_stays_under_2_gb_on_both_backends() {
    let dir = std::env::temp_dir().join(format!("gllm-long-prompt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // " a" is one token of Qwen's tokenizer: 32 000 of them, and 2 new tokens.
    let prompt = " a".repeat(32_000);
    for backend in ["candle-qwen2", "burn-qwen2"] {
        let manifest = dir.join(format!("{backend}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[[models]]\nid = \"long\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"{backend}\"]\ndevices = [\"cpu\"]\n",
                fixture("tiny-qwen2").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gllm"))
            .arg("--manifest")
            .arg(&manifest)
            .args([
                "generate",
                "--model",
                "long",
                "--temperature",
                "0",
                "--max-tokens",
                "2",
                "--json",
                &prompt,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gllm");
        let pid = child.id();
        let mut peak = 0;
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if let Some(p) = peak_rss(pid) {
                peak = peak.max(p);
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{backend}: still running after 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(v["prompt_tokens"], 32_000, "{backend}: {v}");
        assert_eq!(
            v["token_ids"].as_array().map(Vec::len),
            Some(2),
            "{backend}: {v}"
        );
        println!(
            "{backend}: 32 000-token prompt, peak RSS {:.0} MiB, {:.1} s",
            peak as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        );
        assert!(peak > 0, "{backend}: no RSS sample");
        assert!(
            peak < 2 * 1024 * 1024 * 1024,
            "{backend}: peak RSS {peak} bytes"
        );
    }
}
