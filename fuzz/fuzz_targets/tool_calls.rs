//! Model output read for tool calls, whole and in pieces cut where the input says:
//! no panic, and the calls found whole are the calls found streamed.
#![no_main]

use gllm_runtime::{ToolCallParser, ToolOutput, parse_tool_calls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let known = vec!["get_weather".to_string(), "f".to_string()];
    let whole = parse_tool_calls(&text, &known);
    let step = usize::from(cut.max(1));
    let mut p = ToolCallParser::new(known);
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.extend(p.push(&text[start..end]));
        start = end;
    }
    out.extend(p.finish());
    let streamed: Vec<_> = out
        .into_iter()
        .filter_map(|o| match o {
            ToolOutput::Call(c) => Some(c),
            ToolOutput::Content(_) => None,
        })
        .collect();
    assert_eq!(streamed, whole.calls, "streamed and whole parses differ");
});
