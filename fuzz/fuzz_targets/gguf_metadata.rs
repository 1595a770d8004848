//! GGUF metadata from arbitrary bytes, then the tokenizer transformers would rebuild
//! from it: errors are fine, panics and unbounded allocations are not.
#![no_main]

use gllm_runtime::gguf_meta::GgufMetadata;
use gllm_runtime::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = GgufMetadata::from_bytes(data, "fuzz") {
        let _ = meta.architecture();
        let _ = meta.str("tokenizer.chat_template");
        if let Ok(tok) = TextTokenizer::from_gguf(&meta) {
            let _ = tok.encode("hello <|im_start|> wörld", true);
        }
    }
});
