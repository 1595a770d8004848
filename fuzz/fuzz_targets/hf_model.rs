//! A Hugging Face model directory from arbitrary bytes: the first byte picks the
//! backend and task (burn-bert embed or rerank, candle-qwen2 or burn-qwen2 generate),
//! the bytes up to the next NUL are `config.json`, the rest `model.safetensors`. It is
//! loaded on the CPU (config parsing of every architecture, both safetensors readers,
//! the strict tensor checks) and, when it loads, run once. Errors are fine; panics and
//! unbounded allocations are not.
#![no_main]

use gllm_api::{BackendFactory, Task, WeightFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (config, weights) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (factory, task): (&dyn BackendFactory, Task) = match which % 4 {
        0 => (&burn_bert::FACTORY, Task::Embed),
        1 => (&burn_bert::FACTORY, Task::Rerank),
        2 => (&candle_qwen2::FACTORY, Task::Generate),
        _ => (&burn_qwen2::FACTORY, Task::Generate),
    };
    let dir = gllm_fuzz::scratch_dir();
    std::fs::write(dir.join("config.json"), config).expect("scratch file");
    std::fs::write(dir.join("model.safetensors"), weights).expect("scratch file");
    let architecture = match task {
        Task::Generate => "qwen2",
        _ => "bert",
    };
    let spec = gllm_fuzz::spec(task, dir, WeightFormat::Safetensors, architecture);
    gllm_fuzz::load_and_run(factory, &spec);
});
