//! Writes a random-weight model from a config.json:
//! `cargo run --release -p candle-qwen2 --example synth -- CONFIG OUT_DIR [FORMAT...]`
//! (formats: safetensors f16 q8_0 q4_0 q4_1 q4_k; default all but q4_k, which needs widths
//! that are multiples of 256).

use candle_qwen2::synth::{SynthFormat, synthesize};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(config), Some(out)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: synth CONFIG_JSON OUT_DIR [safetensors|f16|q8_0|q4_0|q4_1|q4_k ...]");
    };
    let formats = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|f| SynthFormat::parse(f).ok_or_else(|| anyhow::anyhow!("unknown format {f}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        SynthFormat::ALL
            .into_iter()
            .filter(|f| *f != SynthFormat::GgufQ4K)
            .collect()
    };
    let t = std::time::Instant::now();
    for p in synthesize(config.as_ref(), out.as_ref(), &formats)? {
        println!("{}", p.display());
    }
    eprintln!("synthesized in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
