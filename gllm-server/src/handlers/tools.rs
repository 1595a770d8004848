//! What a chat request asks of its answer beyond text: tools (`tools`, `tool_choice`,
//! `parallel_tool_calls`) and structured outputs (`response_format`), checked field by
//! field and turned into template variables and a decoding grammar.

use gllm_runtime::{Grammar, tool_call_grammar};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// How tools may be used in the answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Choice {
    /// Not offered to the model (`tool_choice: "none"`, or no tools).
    None,
    /// The model decides (`auto`, the default with tools).
    Auto,
    /// The answer is one or more calls (`required`).
    Required,
    /// The answer is a call of this function.
    Named(String),
}

/// The checked tools of a request.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// The entries as the client wrote them (they render into the chat template).
    pub entries: Vec<Value>,
    pub names: Vec<String>,
    pub choice: Choice,
    pub parallel: bool,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl Tools {
    /// Checks `tools`, `tool_choice` and `parallel_tool_calls`.
    pub fn read(
        tools: Option<Vec<Value>>,
        tool_choice: Option<Value>,
        parallel: Option<bool>,
    ) -> Result<Self, ApiError> {
        let entries = tools.unwrap_or_default();
        let mut names = Vec::with_capacity(entries.len());
        for (i, t) in entries.iter().enumerate() {
            let field = |f: &str| format!("tools[{i}]{f}");
            let kind = t.get("type").and_then(Value::as_str);
            if kind != Some("function") {
                return Err(ApiError::invalid_param(
                    &field(".type"),
                    "each tool must be `{\"type\": \"function\", \"function\": {...}}`",
                ));
            }
            let Some(f) = t.get("function").and_then(Value::as_object) else {
                return Err(ApiError::invalid_param(
                    &field(".function"),
                    "`function` must be an object with a `name`",
                ));
            };
            let Some(name) = f.get("name").and_then(Value::as_str) else {
                return Err(ApiError::invalid_param(
                    &field(".function.name"),
                    "`name` must be a string",
                ));
            };
            if !valid_name(name) {
                return Err(ApiError::invalid_param(
                    &field(".function.name"),
                    format!(
                        "`{name}` is not a valid function name (1-64 letters, digits, `_`, `-`, `.`)"
                    ),
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(ApiError::invalid_param(
                    &field(".function.name"),
                    format!("the function `{name}` is defined twice"),
                ));
            }
            if let Some(d) = f.get("description")
                && !d.is_string()
            {
                return Err(ApiError::invalid_param(
                    &field(".function.description"),
                    "`description` must be a string",
                ));
            }
            if let Some(p) = f.get("parameters")
                && !p.is_object()
            {
                return Err(ApiError::invalid_param(
                    &field(".function.parameters"),
                    "`parameters` must be a JSON Schema object",
                ));
            }
            names.push(name.to_string());
        }
        let choice = match tool_choice {
            None | Some(Value::Null) => {
                if entries.is_empty() {
                    Choice::None
                } else {
                    Choice::Auto
                }
            }
            Some(Value::String(s)) => match s.as_str() {
                "none" => Choice::None,
                "auto" => Choice::Auto,
                "required" => Choice::Required,
                other => {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        format!(
                            "`{other}` is not a tool choice: use none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                        ),
                    ));
                }
            },
            Some(v) => {
                let name = v
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "tool_choice",
                            "a named tool choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        )
                    })?;
                if !names.iter().any(|n| n == name) {
                    return Err(ApiError::invalid_param(
                        "tool_choice.function.name",
                        format!("no tool is named `{name}`"),
                    ));
                }
                Choice::Named(name.to_string())
            }
        };
        if entries.is_empty() && matches!(choice, Choice::Required | Choice::Named(_)) {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "`tool_choice` asks for a tool call but `tools` is empty",
            ));
        }
        Ok(Self {
            entries,
            names,
            choice,
            parallel: parallel.unwrap_or(true),
        })
    }

    /// True when the model is offered the tools (and its answer is read for calls).
    pub fn active(&self) -> bool {
        self.choice != Choice::None && !self.entries.is_empty()
    }

    /// The grammar that forces the answer to be calls, for `required` and a named choice.
    pub fn grammar(&self) -> Option<Grammar> {
        match &self.choice {
            Choice::Required => Some(Grammar::Lark(tool_call_grammar(
                &self.entries,
                None,
                self.parallel,
            ))),
            Choice::Named(name) => Some(Grammar::Lark(tool_call_grammar(
                &self.entries,
                Some(name),
                false,
            ))),
            Choice::None | Choice::Auto => None,
        }
    }
}

/// The chat template's variables: the request's `chat_template_kwargs` (which may not
/// set `tools` or `documents`: those are request fields with checks of their own),
/// plus the tools when the model is offered them.
pub(crate) fn template_kwargs(
    kwargs: Option<Map<String, Value>>,
    tools: &Tools,
) -> Result<Map<String, Value>, ApiError> {
    let mut kwargs = kwargs.unwrap_or_default();
    if let Some(k) = kwargs
        .keys()
        .find(|k| matches!(k.as_str(), "tools" | "documents"))
    {
        return Err(ApiError::invalid_param(
            "chat_template_kwargs",
            format!("`{k}` cannot be set through chat_template_kwargs"),
        ));
    }
    if tools.active() {
        kwargs.insert("tools".into(), Value::Array(tools.entries.clone()));
    }
    Ok(kwargs)
}

/// `response_format`: `text` (none), `json_object`, or `json_schema` with its schema.
pub(crate) fn response_format(v: Option<Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_param("response_format.type", "`type` must be a string")
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Grammar::JsonObject)),
        "json_schema" => {
            let spec = v
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "response_format.json_schema",
                        "`json_schema` must be an object with a `schema`",
                    )
                })?;
            match spec.get("schema") {
                Some(s @ Value::Object(_)) => Ok(Some(Grammar::JsonSchema(s.clone()))),
                Some(Value::Bool(true)) | None => Ok(Some(Grammar::JsonObject)),
                Some(_) => Err(ApiError::invalid_param(
                    "response_format.json_schema.schema",
                    "`schema` must be a JSON Schema object",
                )),
            }
        }
        other => Err(ApiError::invalid_param(
            "response_format.type",
            format!("`{other}` is not a response format: use text, json_object or json_schema"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
        ]
    }

    #[test]
    fn tool_fields_are_checked_by_name() {
        let t = Tools::read(Some(weather()), None, None).expect("valid");
        assert_eq!(t.choice, Choice::Auto);
        assert!(t.active() && t.grammar().is_none());
        let t = Tools::read(Some(weather()), Some(json!("required")), None).expect("valid");
        assert!(matches!(t.grammar(), Some(Grammar::Lark(_))));
        let t = Tools::read(
            Some(weather()),
            Some(json!({"type": "function", "function": {"name": "get_weather"}})),
            None,
        )
        .expect("valid");
        assert_eq!(t.choice, Choice::Named("get_weather".into()));

        let e = Tools::read(
            Some(weather()),
            Some(json!({"type": "function", "function": {"name": "launch"}})),
            None,
        )
        .expect_err("unknown function");
        assert_eq!(e.param.as_deref(), Some("tool_choice.function.name"));
        let e = Tools::read(
            Some(vec![json!({"type": "function", "function": {"name": 3}})]),
            None,
            None,
        )
        .expect_err("bad name");
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let e =
            Tools::read(Some(vec![json!({"type": "retrieval"})]), None, None).expect_err("type");
        assert_eq!(e.param.as_deref(), Some("tools[0].type"));
        let bad_params = json!({"type": "function", "function": {"name": "f", "parameters": "x"}});
        let e = Tools::read(Some(vec![bad_params]), None, None).expect_err("parameters");
        assert_eq!(e.param.as_deref(), Some("tools[0].function.parameters"));
        let e = Tools::read(None, Some(json!("required")), None).expect_err("no tools");
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = Tools::read(Some(weather()), Some(json!("sometimes")), None).expect_err("choice");
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn response_formats() {
        assert_eq!(response_format(None).expect("none"), None);
        assert_eq!(
            response_format(Some(json!({"type": "text"}))).expect("text"),
            None
        );
        assert_eq!(
            response_format(Some(json!({"type": "json_object"}))).expect("object"),
            Some(Grammar::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "number"}}});
        assert_eq!(
            response_format(Some(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            ))
            .expect("schema"),
            Some(Grammar::JsonSchema(schema))
        );
        let e = response_format(Some(
            json!({"type": "json_schema", "json_schema": {"schema": 3}}),
        ))
        .expect_err("bad schema");
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        let e = response_format(Some(json!({"type": "yaml"}))).expect_err("bad type");
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
    }
}
