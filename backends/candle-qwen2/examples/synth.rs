//! Writes a random-weight model from a config.json:
//! `cargo run --release -p candle-qwen2 --example synth -- CONFIG OUT_DIR [FORMAT...]`
//! (formats: safetensors f16 q8_0 q4_0; default all).

use candle_qwen2::synth::{SynthFormat, synthesize};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(config), Some(out)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: synth CONFIG_JSON OUT_DIR [safetensors|f16|q8_0|q4_0 ...]");
    };
    let formats = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|f| SynthFormat::parse(f).ok_or_else(|| anyhow::anyhow!("unknown format {f}")))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        SynthFormat::ALL.to_vec()
    };
    let t = std::time::Instant::now();
    for p in synthesize(config.as_ref(), out.as_ref(), &formats)? {
        println!("{}", p.display());
    }
    eprintln!("synthesized in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
