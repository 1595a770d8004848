//! A GGUF file from arbitrary bytes, loaded by candle-qwen2 on the CPU (header and
//! tensor infos, the config from metadata, the strict tensor check, the repack of every
//! block type into gllm-kernels' layout) and, when it loads, run for a prefill and one
//! decode step. Errors are fine; panics, out-of-bounds accesses (the SIMD kernels trust
//! the sizes the loader checked) and unbounded allocations are not.
#![no_main]

use gllm_api::{Task, WeightFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = gllm_fuzz::scratch_dir().join("model.gguf");
    std::fs::write(&path, data).expect("scratch file");
    let spec = gllm_fuzz::spec(Task::Generate, path, WeightFormat::Gguf, "qwen2");
    gllm_fuzz::load_and_run(&candle_qwen2::FACTORY, &spec);
});
