//! Chat templates render exactly as transformers' apply_chat_template.

use gllm_runtime::chat_template::{ChatMessage, ChatTemplate};
use gllm_runtime::gguf_meta::GgufMetadata;
use gllm_runtime::tokenizer::TextTokenizer;
use gllm_testkit::{fixture, fixtures_dir, json_u32s, read_json, real_model};

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn tiny_qwen2_and_qwen3_chat_template_cases() {
    for fixture_name in ["tiny-qwen2", "tiny-qwen3"] {
        chat_template_cases(fixture_name);
    }
}

fn chat_template_cases(fixture_name: &str) {
    let dir = fixture(fixture_name);
    let cfg = read_json(&dir.join("tokenizer_config.json")).unwrap();
    let tmpl = ChatTemplate::new(cfg["chat_template"].as_str().unwrap(), "", "<|im_end|>").unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let reference = read_json(&dir.join("reference.json")).unwrap();
    let cases = reference["chat_template"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let msgs = messages(&case["messages"]);
        let add = case["add_generation_prompt"].as_bool().unwrap();
        // every other key of the case is a template variable (e.g. enable_thinking)
        let kwargs: serde_json::Map<_, _> = case
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| {
                ![
                    "messages",
                    "add_generation_prompt",
                    "text",
                    "input_ids",
                    "greedy_8",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let text = tmpl.render_with(&msgs, add, &kwargs).unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "{fixture_name}: {msgs:?}"
        );
        assert_eq!(
            tok.encode(&text, false).unwrap().ids,
            json_u32s(&case["input_ids"])
        );
    }
}

#[test]
fn smollm2_chat_template_from_the_gguf_metadata() {
    let meta = GgufMetadata::read(&real_model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let source = meta
        .str("tokenizer.chat_template")
        .expect("the GGUF carries a chat template");
    assert_eq!(
        source,
        std::fs::read_to_string(fixture("smollm2-tokenizer").join("chat_template.jinja")).unwrap()
    );
    let tmpl = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>").unwrap();
    let tok = TextTokenizer::from_gguf(&meta).unwrap();
    let smol = read_json(&fixtures_dir().join("smollm2-gguf.reference.json")).unwrap();
    let chat = &smol["chat"];
    let text = tmpl.render(&messages(&chat["messages"]), true).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    assert_eq!(
        tok.encode(&text, false).unwrap().ids,
        json_u32s(&chat["input_ids"])
    );
}

/// The two tool conversations of `tool-chat-templates.reference.json` (tool definitions;
/// assistant calls with arguments as an object and as a JSON string; parallel calls;
/// tool results) render to exactly transformers' text and ids, with Qwen2.5's template
/// (from the Qwen2.5-Coder GGUF) and Qwen3's (tiny-qwen2's), with and without the
/// generation prompt.
#[test]
fn tool_conversations_render_exactly_as_transformers() {
    let coder = GgufMetadata::read(&gllm_testkit::coder::coder_gguf()).unwrap();
    let qwen25 = ChatTemplate::new(
        coder.str("tokenizer.chat_template").expect("template"),
        "",
        "<|im_end|>",
    )
    .unwrap();
    let qwen25_tok = TextTokenizer::from_gguf(&coder).unwrap();
    let dir = fixture("tiny-qwen2");
    let cfg = read_json(&dir.join("tokenizer_config.json")).unwrap();
    let qwen3 =
        ChatTemplate::new(cfg["chat_template"].as_str().unwrap(), "", "<|im_end|>").unwrap();
    let qwen3_tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let reference = read_json(&fixtures_dir().join("tool-chat-templates.reference.json")).unwrap();
    let conversations = reference["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    let mut checked = 0;
    for (n, conv) in conversations.iter().enumerate() {
        let msgs = messages(&conv["messages"]);
        let mut kwargs = serde_json::Map::new();
        kwargs.insert("tools".into(), conv["tools"].clone());
        for (name, tmpl, tok) in [
            ("qwen2.5", &qwen25, &qwen25_tok),
            ("qwen3", &qwen3, &qwen3_tok),
        ] {
            for add in [false, true] {
                let key = if add {
                    format!("{name}+generation_prompt")
                } else {
                    name.to_string()
                };
                let want = &conv["rendered"][&key];
                let text = tmpl.render_with(&msgs, add, &kwargs).unwrap();
                assert_eq!(
                    text,
                    want["text"].as_str().unwrap(),
                    "conversation {n}, {key}"
                );
                assert_eq!(
                    tok.encode(&text, false).unwrap().ids,
                    json_u32s(&want["input_ids"]),
                    "conversation {n}, {key}: ids"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8);
}
