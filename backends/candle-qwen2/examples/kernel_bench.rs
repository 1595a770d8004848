//! Throughput of the CPU matmul kernels alone (packed Q4_0/Q4_1/Q8_0, bf16), on the
//! Qwen2-0.5B matrix shapes, for one activation row (decode) or a prompt-sized batch.
//!
//! `cargo run --release -p candle-qwen2 --example kernel_bench [-- M]`
//! Threads: `RAYON_NUM_THREADS` (default: all cores). Prints GB/s of weights read and
//! the time per call, the figures to compare kernel changes by.

use std::time::Instant;

use candle_qwen2::kernels::{HalfKind, PackedHalf};
use candle_qwen2::qkernels::{PackedQ, QK, QKind};

fn blocks(kind: QKind, rows: usize, cols: usize) -> Vec<u8> {
    let qb = match kind {
        QKind::Q4_0 | QKind::Q4_1 => QK / 2,
        QKind::Q8_0 => QK,
    };
    let nb = rows * cols / QK;
    let mut out = Vec::with_capacity(nb * (2 + qb));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..nb {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let d = half::f16::from_f32(0.001 + (state % 1000) as f32 * 1e-5);
        out.extend(d.to_le_bytes());
        if kind == QKind::Q4_1 {
            out.extend(half::f16::from_f32(-0.004).to_le_bytes());
        }
        for j in 0..qb {
            out.push((state >> (j % 56)) as u8 ^ j as u8);
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let m: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    // (name, rows, cols): fused qkv, o, fused gate/up, down, lm_head.
    let shapes = [
        ("qkv", 1152, 896),
        ("o", 896, 896),
        ("gate_up", 9728, 896),
        ("down", 896, 4864),
        ("lm_head", 151936, 896),
    ];
    println!("m = {m}, threads = {}", rayon::current_num_threads());
    for kind in [QKind::Q4_0, QKind::Q4_1, QKind::Q8_0] {
        for (name, rows, cols) in shapes {
            let data = blocks(kind, rows, cols);
            let p = PackedQ::from_gguf_blocks(kind, rows, cols, &data)
                .ok_or_else(|| anyhow::anyhow!("bad blocks"))?;
            measure(
                &format!("{kind:?}"),
                name,
                rows,
                cols,
                m,
                data.len(),
                |x, out| p.matmul_t(x, m, out),
            );
        }
    }
    for (name, rows, cols) in shapes {
        let w: Vec<u16> = (0..rows * cols)
            .map(|i| HalfKind::Bf16.from_f32(((i * 7 % 61) as f32 - 30.0) / 300.0))
            .collect();
        let p = PackedHalf::new(HalfKind::Bf16, rows, cols, &w)
            .ok_or_else(|| anyhow::anyhow!("bad matrix"))?;
        measure("Bf16", name, rows, cols, m, w.len() * 2, |x, out| {
            p.matmul_t(x, m, out)
        });
    }
    Ok(())
}

/// Times `matmul(x, out)` for an [m, cols] input and prints time per call and weight
/// bytes read per second.
fn measure(
    kind: &str,
    name: &str,
    rows: usize,
    cols: usize,
    m: usize,
    bytes: usize,
    matmul: impl Fn(&[f32], &mut [f32]),
) {
    let x: Vec<f32> = (0..m * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
        .collect();
    let mut out = vec![0f32; m * rows];
    matmul(&x, &mut out);
    let iters = (2_000_000_000 / (bytes * m.max(1))).clamp(3, 2000);
    let t = Instant::now();
    for _ in 0..iters {
        matmul(&x, &mut out);
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{kind} {name:8} [{rows:6} x {cols:4}]  {:8.1} us  {:6.1} GB/s",
        s * 1e6,
        bytes as f64 / s / 1e9
    );
}
