//! Tool calls in a model's output, and the grammar that forces one.
//!
//! Qwen2.5's and Qwen3's chat templates ask for the Hermes form, one block per call:
//! `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`. Small models (Qwen2.5-Coder
//! among them) often answer with the bare JSON object instead, so an answer that is
//! nothing but such an object (or an array of them) naming a known tool is a call too.
//! [`ToolCallParser`] reads a stream of text pieces and separates the calls from the
//! text, holding back only what could still turn out to be markup, so that no
//! `<tool_call>` tag ever reaches the content; [`parse_tool_calls`] reads a whole answer.

use serde_json::Value;

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments as JSON text (an object given by the model is written compactly).
    pub arguments: String,
}

/// What [`ToolCallParser`] separates: text for the answer's content, or a whole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutput {
    /// Text of the answer (never tool-call markup).
    Content(String),
    /// A complete call.
    Call(ToolCall),
}

/// A whole answer read by [`parse_tool_calls`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedAnswer {
    /// The text outside the calls, trimmed.
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

/// Reads a call object: `{"name": …, "arguments": …}` (or `"parameters"`), the arguments
/// an object or a JSON string of one. `known` limits the names (empty: any).
fn call_from(v: &Value, known: &[String]) -> Option<ToolCall> {
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?;
    if !known.is_empty() && !known.iter().any(|k| k == name) {
        return None;
    }
    let args = obj
        .get("arguments")
        .or_else(|| obj.get("parameters"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(_)) => s,
            _ => return None,
        },
        v @ Value::Object(_) => v.to_string(),
        _ => return None,
    };
    Some(ToolCall {
        name: name.to_string(),
        arguments,
    })
}

/// The calls of an answer that is nothing but a JSON call object or an array of them
/// (optionally inside a Markdown code fence), each naming a known tool.
fn bare_calls(text: &str, known: &[String]) -> Option<Vec<ToolCall>> {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        t = rest.strip_suffix("```")?.trim();
    }
    match serde_json::from_str::<Value>(t).ok()? {
        v @ Value::Object(_) => Some(vec![call_from(&v, known)?]),
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|v| call_from(v, known)).collect()
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: the answer may still be a bare JSON call.
    Start,
    /// Buffering what looks like a bare JSON call, to the end.
    Bare,
    /// Ordinary text; `<tool_call>` opens a call.
    Text,
    /// Inside `<tool_call>`, until `</tool_call>`.
    InCall,
}

/// Splits streamed text into content and tool calls (see the module docs).
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    known: Vec<String>,
    state: State,
    /// Text held back: a possible tag prefix, a call's body, or a bare-JSON candidate.
    held: String,
    /// Whitespace after a call, dropped unless more text follows it.
    gap: String,
    calls: usize,
}

impl ToolCallParser {
    /// A parser for an answer that may call the tools named `known`.
    pub fn new(known: Vec<String>) -> Self {
        Self {
            known,
            state: State::Start,
            held: String::new(),
            gap: String::new(),
            calls: 0,
        }
    }

    /// Reads the next piece of text.
    pub fn push(&mut self, piece: &str) -> Vec<ToolOutput> {
        let mut out = Vec::new();
        self.held.push_str(piece);
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    // Undecided until the first non-space text says which form this is
                    // (a piece may end inside the opening fence).
                    if t.is_empty() || (t.len() < 3 && "```".starts_with(t)) {
                        return out;
                    }
                    self.state = if t.starts_with('{') || t.starts_with('[') || t.starts_with("```")
                    {
                        State::Bare
                    } else {
                        State::Text
                    };
                }
                State::Bare => return out,
                State::Text => {
                    if let Some(at) = self.held.find(OPEN) {
                        let before: String = self.held[..at].to_string();
                        self.text(&before, &mut out);
                        self.held.drain(..at + OPEN.len());
                        self.state = State::InCall;
                        continue;
                    }
                    // Keep back the longest end of `held` that could begin the tag.
                    let keep = (1..OPEN.len().min(self.held.len() + 1))
                        .rev()
                        .find(|&n| {
                            self.held.is_char_boundary(self.held.len() - n)
                                && OPEN.starts_with(&self.held[self.held.len() - n..])
                        })
                        .unwrap_or(0);
                    let cut = self.held.len() - keep;
                    let text: String = self.held.drain(..cut).collect();
                    self.text(&text, &mut out);
                    return out;
                }
                State::InCall => {
                    let Some(at) = self.held.find(CLOSE) else {
                        return out;
                    };
                    let body: String = self.held[..at].to_string();
                    self.held.drain(..at + CLOSE.len());
                    self.block(&body, &mut out);
                    self.state = State::Text;
                }
            }
        }
    }

    /// Ends the answer: what was held back is resolved (an unclosed call that parses
    /// is a call; anything else is content).
    pub fn finish(mut self) -> Vec<ToolOutput> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        match self.state {
            // Only space, or the start of a fence that never came.
            State::Start => self.text(&held, &mut out),
            State::Bare => match bare_calls(&held, &self.known) {
                Some(calls) => {
                    for c in calls {
                        self.calls += 1;
                        out.push(ToolOutput::Call(c));
                    }
                }
                None => out.push(ToolOutput::Content(held)),
            },
            State::Text => self.text(&held, &mut out),
            State::InCall => self.block(&held, &mut out),
        }
        out
    }

    /// Content text; whitespace right after a call waits to see whether text follows.
    fn text(&mut self, text: &str, out: &mut Vec<ToolOutput>) {
        if text.is_empty() {
            return;
        }
        if self.calls > 0 && text.trim().is_empty() {
            self.gap.push_str(text);
            return;
        }
        let mut t = std::mem::take(&mut self.gap);
        t.push_str(text);
        out.push(ToolOutput::Content(t));
    }

    /// The body of a `<tool_call>` block: a call, or (when it does not parse) content as written.
    fn block(&mut self, body: &str, out: &mut Vec<ToolOutput>) {
        match serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| call_from(&v, &[]))
        {
            Some(c) => {
                self.gap.clear();
                self.calls += 1;
                out.push(ToolOutput::Call(c));
            }
            None => {
                let raw = format!("{OPEN}{body}{CLOSE}");
                self.text(&raw, out);
            }
        }
    }
}

/// Separates the tool calls of a whole answer from its text.
pub fn parse_tool_calls(text: &str, known: &[String]) -> ParsedAnswer {
    let mut p = ToolCallParser::new(known.to_vec());
    let mut events = p.push(text);
    events.extend(p.finish());
    let mut answer = ParsedAnswer::default();
    for e in events {
        match e {
            ToolOutput::Content(t) => answer.content.push_str(&t),
            ToolOutput::Call(c) => answer.calls.push(c),
        }
    }
    answer.content = answer.content.trim().to_string();
    answer
}

/// A Lark grammar (llguidance's dialect) whose sentences are Hermes tool calls:
/// `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`, each call's arguments
/// following its function's `parameters` schema. `tools` are OpenAI tool entries
/// (`{"type": "function", "function": {"name", "parameters"}}`); `only` limits the
/// calls to one function; `parallel` allows more than one call.
pub fn tool_call_grammar(tools: &[Value], only: Option<&str>, parallel: bool) -> String {
    let variants: Vec<Value> = tools
        .iter()
        .filter_map(|t| t.get("function"))
        .filter(|f| only.is_none_or(|n| f.get("name").and_then(Value::as_str) == Some(n)))
        .map(|f| {
            let params = f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            serde_json::json!({
                "type": "object",
                "properties": {
                    "name": {"const": f.get("name").cloned().unwrap_or(Value::Null)},
                    "arguments": params,
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = serde_json::json!({"anyOf": variants});
    crate::grammar::compact_json(&mut schema);
    let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
    format!(
        "start: call{repeat}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {schema}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["get_weather".into(), "get_time".into()]
    }

    #[test]
    fn hermes_blocks_become_calls_and_the_text_stays() {
        let a = parse_tool_calls(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"timezone\\\": \\\"Europe/Oslo\\\"}\"}\n</tool_call>",
            &known(),
        );
        assert_eq!(a.content, "Let me check.");
        assert_eq!(
            a.calls,
            vec![
                ToolCall {
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Tokyo"}"#.into()
                },
                ToolCall {
                    name: "get_time".into(),
                    arguments: r#"{"timezone": "Europe/Oslo"}"#.into()
                },
            ]
        );
    }

    #[test]
    fn a_bare_json_call_naming_a_known_tool_is_a_call() {
        let text = r#"{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}"#;
        let a = parse_tool_calls(text, &known());
        assert_eq!(a.content, "");
        assert_eq!(a.calls.len(), 1);
        assert_eq!(a.calls[0].arguments, r#"{"city":"Paris","unit":"celsius"}"#);
        // JSON that is not a call of a known tool is an ordinary answer.
        let a = parse_tool_calls(r#"{"name": "launch", "arguments": {}}"#, &known());
        assert!(a.calls.is_empty());
        assert_eq!(a.content, r#"{"name": "launch", "arguments": {}}"#);
        let a = parse_tool_calls(
            "```json\n[{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"UTC\"}}]\n```",
            &known(),
        );
        assert_eq!(a.calls.len(), 1);
    }

    #[test]
    fn streamed_pieces_never_leak_markup_into_the_content() {
        let text = "Sure.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"UTC\"}}\n</tool_call>\n";
        // Every way of cutting the text into two pieces, and one character at a time.
        let mut cuts: Vec<Vec<&str>> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .map(|i| vec![&text[..i], &text[i..]])
            .collect();
        cuts.push(
            text.char_indices()
                .map(|(i, c)| &text[i..i + c.len_utf8()])
                .collect(),
        );
        for pieces in cuts {
            let mut p = ToolCallParser::new(known());
            let mut out = Vec::new();
            for piece in &pieces {
                out.extend(p.push(piece));
            }
            out.extend(p.finish());
            let content: String = out
                .iter()
                .filter_map(|e| match e {
                    ToolOutput::Content(t) => Some(t.as_str()),
                    ToolOutput::Call(_) => None,
                })
                .collect();
            assert_eq!(content, "Sure.\n", "{pieces:?}");
            let calls: Vec<&ToolCall> = out
                .iter()
                .filter_map(|e| match e {
                    ToolOutput::Call(c) => Some(c),
                    ToolOutput::Content(_) => None,
                })
                .collect();
            assert_eq!(calls.len(), 1, "{pieces:?}");
            assert_eq!(calls[0].name, "get_time");
        }
    }

    #[test]
    fn a_fence_cut_between_pieces_is_still_a_fence() {
        // Found by the tool_calls fuzz target: "`" then "`" then "`..." went the way of
        // plain text, where the whole answer went the way of a fenced JSON call.
        let text = "```json\n{\"name\": \"get_time\", \"arguments\": {}}\n```";
        let mut p = ToolCallParser::new(known());
        let mut out = Vec::new();
        for (i, c) in text.char_indices() {
            out.extend(p.push(&text[i..i + c.len_utf8()]));
        }
        out.extend(p.finish());
        let whole = parse_tool_calls(text, &known());
        assert_eq!(whole.calls.len(), 1);
        assert_eq!(out, vec![ToolOutput::Call(whole.calls[0].clone())]);
    }

    #[test]
    fn a_block_that_does_not_parse_is_content_as_written() {
        let a = parse_tool_calls("<tool_call>\nnot json\n</tool_call>", &known());
        assert!(a.calls.is_empty());
        assert_eq!(a.content, "<tool_call>\nnot json\n</tool_call>");
        let a = parse_tool_calls("plain answer < with a bracket", &known());
        assert_eq!(a.content, "plain answer < with a bracket");
        let a = parse_tool_calls("``", &known());
        assert_eq!(a.content, "``", "an answer that is only backticks is kept");
    }

    #[test]
    fn the_grammar_names_each_function_schema() {
        let tools = vec![serde_json::json!({"type": "function", "function": {
            "name": "get_time", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}
        }})];
        let g = tool_call_grammar(&tools, None, true);
        assert!(g.starts_with("start: call (\"\\n\" call)*\n"), "{g}");
        assert!(g.contains(r#""name":{"const":"get_time"}"#), "{g}");
        assert!(g.contains(r#""timezone":{"type":"string"}"#), "{g}");
    }
}
