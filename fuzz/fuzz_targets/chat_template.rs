//! An arbitrary chat template (the input up to a NUL byte is the template, the rest a
//! message) rendered as transformers would: errors and fuel exhaustion are fine,
//! panics are not.
#![no_main]

use gllm_runtime::chat_template::{ChatMessage, ChatTemplate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (source, content) = text.split_once('\0').unwrap_or((&text, ""));
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = Some(vec![serde_json::json!({
        "type": "function", "function": {"name": "f", "arguments": {"x": content}}
    })]);
    let messages = [
        ChatMessage::new("system", content),
        ChatMessage::new("user", content),
        call,
    ];
    let mut kwargs = serde_json::Map::new();
    kwargs.insert(
        "tools".into(),
        serde_json::json!([{"type": "function", "function": {"name": "f"}}]),
    );
    let _ = t.render_with(&messages, true, &kwargs);
});
