//! Throughput of the CPU matmul kernels alone, every block type, bf16 and f16, on the
//! Qwen2-0.5B matrix shapes, for one activation row (decode) or a prompt-sized batch.
//!
//! `cargo run --release -p gllm-kernels --example kernel_bench [-- M [TYPE,...]]`
//! Threads: `RAYON_NUM_THREADS` (default: all cores); `GLLM_KERNELS=avx2|scalar` caps
//! the kernels. Prints GB/s of weights read, GMAC/s and the time per call (best of five
//! rounds): the figures to compare kernel changes by.
//!
//! By default one matrix per shape is multiplied again and again, so the smaller ones
//! are read from the CPU's caches. `GLLM_BENCH_COLD=1` cycles through copies of each
//! matrix (96 MiB in all), so that every call reads its weights from memory, as a
//! decode step does.

use std::cell::Cell;
use std::time::Instant;

use gllm_kernels::testdata::{Rng, random_blocks};
use gllm_kernels::{BlockType, HalfKind, PackedF32, PackedHalf, QuantMatrix};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let m: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let only: Option<Vec<String>> = args
        .next()
        .map(|s| s.split(',').map(|t| t.to_ascii_uppercase()).collect());
    // (name, rows, cols): fused qkv, o, fused gate/up, down, lm_head of Qwen2-0.5B, or
    // with GLLM_BENCH_MODEL=qwen3-0.6b Qwen3-0.6B's (q and k fused: Q4_K_M gives v
    // another type), or with GLLM_BENCH_MODEL=minilm all-MiniLM-L6-v2's.
    let model = std::env::var("GLLM_BENCH_MODEL").unwrap_or_default();
    let shapes: &[(&str, usize, usize)] = if model == "minilm" {
        // all-MiniLM-L6-v2's encoder layer (f32 and int8 encoders).
        &[
            ("qkv", 1152, 384),
            ("o", 384, 384),
            ("inter", 1536, 384),
            ("output", 384, 1536),
        ]
    } else if model == "qwen3-0.6b" {
        &[
            ("qk", 3072, 1024),
            ("v", 1024, 1024),
            ("o", 1024, 2048),
            ("gate_up", 6144, 1024),
            ("down", 1024, 3072),
            ("lm_head", 151936, 1024),
        ]
    } else {
        &[
            ("qkv", 1152, 896),
            ("o", 896, 896),
            ("gate_up", 9728, 896),
            ("down", 896, 4864),
            ("lm_head", 151936, 896),
        ]
    };
    println!(
        "m = {m}, threads = {}, kernels {:?}",
        rayon::current_num_threads(),
        gllm_kernels::Isa::detect()
    );
    for ty in BlockType::ALL {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|t| t == ty.name()))
        {
            continue;
        }
        for &(name, rows, cols) in shapes {
            // k-quants need widths that are multiples of 256: 896 becomes 1024.
            let cols = cols.next_multiple_of(ty.block_values());
            let bytes = rows * cols / ty.block_values() * ty.block_bytes();
            let ps = (0..copies(bytes))
                .map(|i| QuantMatrix::from_gguf(ty, rows, cols, &random_blocks(ty, rows, cols, i)))
                .collect::<Result<Vec<_>, _>>()?;
            let next = Cell::new(0);
            measure(ty.name(), name, rows, cols, bytes, m, |x, out| {
                next.set((next.get() + 1) % ps.len());
                ps[next.get()].matmul(x, m, out)
            });
        }
    }
    for (kind, label) in [(HalfKind::Bf16, "bf16"), (HalfKind::F16, "f16")] {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|t| t.eq_ignore_ascii_case(label)))
        {
            continue;
        }
        let mut rng = Rng::new(3);
        for &(name, rows, cols) in shapes {
            let w: Vec<u16> = (0..rows * cols)
                .map(|_| kind.from_f32(rng.uniform(-0.05, 0.05)))
                .collect();
            let p =
                PackedHalf::new(kind, rows, cols, &w).ok_or_else(|| anyhow::anyhow!("sizes"))?;
            measure(label, name, rows, cols, w.len() * 2, m, |x, out| {
                p.matmul(x, m, out)
            });
        }
    }
    if only
        .as_ref()
        .is_none_or(|o| o.iter().any(|t| t.eq_ignore_ascii_case("f32")))
    {
        let mut rng = Rng::new(3);
        for &(name, rows, cols) in shapes {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-0.05, 0.05)).collect();
            let p = PackedF32::new(rows, cols, &w).ok_or_else(|| anyhow::anyhow!("sizes"))?;
            measure("f32", name, rows, cols, w.len() * 4, m, |x, out| {
                p.matmul(x, m, out)
            });
        }
    }
    Ok(())
}

/// How many copies of a matrix of `bytes` the run cycles through: one, or with
/// `GLLM_BENCH_COLD` set, enough to fill 96 MiB (more than any L3 cache here).
fn copies(bytes: usize) -> u64 {
    if std::env::var_os("GLLM_BENCH_COLD").is_some() {
        ((96 << 20) / bytes.max(1)).max(1) as u64
    } else {
        1
    }
}

fn measure(
    kind: &str,
    name: &str,
    rows: usize,
    cols: usize,
    bytes: usize,
    m: usize,
    f: impl Fn(&[f32], &mut [f32]),
) {
    let x: Vec<f32> = (0..m * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut out = vec![0f32; m * rows];
    f(&x, &mut out);
    // The best of five rounds: on a shared machine the slow rounds are other tenants.
    let reps = ((4e8 / (rows * cols * m.max(1)) as f64) as usize).clamp(2, 400);
    let secs = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f(&x, &mut out);
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min);
    println!(
        "{kind:>5} {name:>8} [{rows:>6} x {cols:>4}]: {:>8.3} ms  {:>6.1} GB/s  {:>7.1} GMAC/s",
        secs * 1e3,
        bytes as f64 / secs / 1e9,
        (rows * cols * m) as f64 / secs / 1e9
    );
}
