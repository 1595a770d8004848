//! The real Qwen2.5-Coder-0.5B-Instruct, Qwen's own Q4_K_M GGUF (Q5_0, Q8_0, Q4_K and
//! Q6_K tensors on gllm-kernels): chat prompts rendered from the GGUF's template have
//! exactly the reference ids, and greedy continuations through the runtime's chat API
//! agree with llama.cpp's or transformers' (`gllm_testkit::coder`). The raw prompts run
//! through `gllm generate` in gllm-cli's tests.

mod support;

use gllm_runtime::TemplateKwargs;
use gllm_runtime::chat_template::ChatMessage;
use gllm_runtime::sampling::SamplingParams;
use gllm_testkit::coder::{CoderCase, coder_cases, coder_eos, coder_gguf};

fn runtime() -> gllm_runtime::Runtime {
    support::runtime(&format!(
        "[[models]]\nid = \"coder\"\ntask = \"generate\"\npath = \"{}\"\nbackends = [\"candle-qwen2\"]\ndevices = [\"cpu\"]\n",
        coder_gguf().display()
    ))
}

/// The case's messages and, for the tools case, `tools` as a template variable.
fn conversation(case: &CoderCase) -> (Vec<ChatMessage>, TemplateKwargs) {
    let messages: Vec<ChatMessage> =
        serde_json::from_value(case.json["messages"].clone()).expect("messages");
    let mut kwargs = TemplateKwargs::new();
    if let Some(tools) = case.json.get("tools") {
        kwargs.insert("tools".into(), tools.clone());
    }
    (messages, kwargs)
}

#[test]
fn chats_and_tool_calls_match_the_references() {
    let rt = runtime();
    let handle = rt.generator_blocking("coder").expect("coder loads");
    let eos = coder_eos().unwrap();
    let mut cases = coder_cases("chats").unwrap();
    cases.extend(coder_cases("tools").unwrap());
    for case in &cases {
        let (messages, kwargs) = conversation(case);
        let text = handle.render_chat_with(&messages, true, &kwargs).unwrap();
        // Tool definitions keep their key order (as transformers renders them).
        assert_eq!(
            text,
            case.json["text"].as_str().unwrap(),
            "{}: rendered prompt",
            case.name
        );
        let ids = handle.encode_chat_with(&messages, &kwargs).unwrap();
        assert_eq!(ids, case.input_ids, "{}: prompt ids", case.name);
        let params = SamplingParams::greedy(case.max_tokens());
        let out = handle
            .generate_ids_blocking(&ids, &params, &mut |_| true)
            .unwrap();
        case.check(&out.token_ids, &eos).unwrap();
    }
}
