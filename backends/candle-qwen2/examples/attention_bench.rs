//! Times CPU attention alone on the Qwen2-0.5B shape (14 query heads, 2 KV heads,
//! head_dim 64): a causal prefill of P positions, then single-query decode steps at
//! depth P. Prints milliseconds and, for the prefill, GFLOP/s of its multiply-adds.
//!
//!   cargo run --release -p candle-qwen2 --example attention_bench [P]

use std::time::Instant;

use candle_qwen2::attention::{AttentionShape, attend, key_cache_len, store_keys};

fn main() {
    let p: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    let s = AttentionShape {
        heads: 14,
        kv_heads: 2,
        head_dim: 64,
    };
    let d = s.head_dim;
    let val = |i: usize| ((i * 2654435761 % 1000) as f32 - 500.0) / 500.0;
    let q: Vec<f32> = (0..p * s.heads * d).map(val).collect();
    let k: Vec<f32> = (0..p * s.kv_heads * d).map(|i| val(i + 7)).collect();
    let v: Vec<f32> = (0..p * s.kv_heads * d).map(|i| val(i + 13)).collect();
    let mut cache = vec![0f32; key_cache_len(p, s.kv_heads, d)];
    store_keys(&mut cache, 0, &k, s.kv_heads, d);
    let mut out = vec![0f32; q.len()];
    // Multiply-adds of a causal prefill: q·k and p·v for every (query head, key ≤ query).
    let macs = 2.0 * (p * (p + 1) / 2 * s.heads * d) as f64;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        attend(&q, &cache, &v, 0, s, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "prefill {p}: {:.1} ms per layer, {:.1} GFLOP/s",
        best * 1e3,
        2.0 * macs / best / 1e9
    );
    let q1 = &q[(p - 1) * s.heads * d..];
    let mut o1 = vec![0f32; s.heads * d];
    let steps = 200;
    let t = Instant::now();
    for _ in 0..steps {
        attend(q1, &cache, &v, p - 1, s, &mut o1);
    }
    println!(
        "decode at depth {p}: {:.1} µs per layer",
        t.elapsed().as_secs_f64() * 1e6 / steps as f64
    );
}
