"""Drives a running `gllm serve` holding the real Qwen2.5-Coder-0.5B-Instruct (id `coder`)
with the official `openai` Python client, as an agent framework would: a tool call
(whole and streamed), a full tool loop, and structured outputs checked with
`jsonschema`.

usage: python3 openai_agent.py BASE_URL FIXTURES_DIR

Exits non-zero on any failure; prints "openai agent: N passed, 0 failed" at the end.
"""

import json
import sys

import jsonschema  # missing packages are failures, never skips
import openai

base_url, fixtures = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="sk-test", max_retries=0)
checks = 0


def check(ok, what):
    global checks
    if not ok:
        raise AssertionError(what)
    checks += 1


reference = json.load(open(f"{fixtures}/qwen2.5-coder-0.5b-gguf.reference.json"))
case = reference["tools"][0]
tools, messages = case["tools"], case["messages"]

# The weather request: a get_weather call for Paris, not text.
r = client.chat.completions.create(
    model="coder", messages=messages, tools=tools, temperature=0, max_tokens=64
)
choice = r.choices[0]
check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason}: {r}")
check(not choice.message.content, f"content {choice.message.content!r}")
calls = choice.message.tool_calls
check(calls and len(calls) == 1, f"tool_calls {calls}")
call = calls[0]
check(call.type == "function" and call.function.name == "get_weather", f"{call}")
args = json.loads(call.function.arguments)
check(args.get("city") == "Paris", f"arguments {args}")
print(f"tool call: {call.function.name}({call.function.arguments})")

# The same, streamed: OpenAI's delta shape, no markup in the content.
content, finish, streamed = "", None, {}
for chunk in client.chat.completions.create(
    model="coder", messages=messages, tools=tools, temperature=0, max_tokens=64, stream=True
):
    for c in chunk.choices:
        if c.delta.content:
            content += c.delta.content
        for d in c.delta.tool_calls or []:
            s = streamed.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            if d.id:
                s["id"] = d.id
            if d.function and d.function.name:
                s["name"] = d.function.name
            if d.function and d.function.arguments:
                s["arguments"] += d.function.arguments
        if c.finish_reason:
            finish = c.finish_reason
check(finish == "tool_calls", f"streamed finish_reason {finish}")
check(content == "", f"streamed content {content!r}")
check(list(streamed) == [0], f"streamed calls {streamed}")
check(streamed[0]["id"] and streamed[0]["name"] == "get_weather", f"{streamed}")
check(json.loads(streamed[0]["arguments"]) == args, f"streamed arguments {streamed[0]}")

# The whole loop: the call, the tool's answer, then a text answer.
loop = messages + [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": call.id,
        "content": json.dumps({"temperature": 18, "unit": "celsius", "condition": "cloudy"}),
    },
]
r = client.chat.completions.create(
    model="coder", messages=loop, tools=tools, temperature=0, max_tokens=48
)
final = r.choices[0]
check(final.finish_reason in ("stop", "length"), f"final finish_reason {final.finish_reason}")
check(not final.message.tool_calls, f"final tool_calls {final.message.tool_calls}")
text = final.message.content or ""
check(text.strip() and "<tool_call>" not in text, f"final answer {text!r}")
check("18" in text, f"the answer uses the tool's result: {text!r}")
print(f"final answer: {text!r}")

# Structured outputs: five schemas, four answers each at temperature 0 and at 1.
schemas = [
    (
        "Give a person (name and age) and the city they live in.",
        {
            "type": "object",
            "properties": {
                "person": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 30},
                        "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    },
                    "required": ["name", "age"],
                    "additionalProperties": False,
                },
                "city": {"type": "string", "maxLength": 30},
            },
            "required": ["person", "city"],
            "additionalProperties": False,
        },
    ),
    (
        "List a few programming languages.",
        {
            "type": "object",
            "properties": {
                "languages": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 20},
                    "minItems": 1,
                    "maxItems": 4,
                }
            },
            "required": ["languages"],
            "additionalProperties": False,
        },
    ),
    (
        "Classify the sentiment of: 'I love this library.'",
        {
            "type": "object",
            "properties": {
                "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                "confidence": {"type": "string", "enum": ["low", "high"]},
            },
            "required": ["sentiment", "confidence"],
            "additionalProperties": False,
        },
    ),
    (
        "Describe a task for a to-do list.",
        {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 40},
                "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                "done": {"type": "boolean"},
                "note": {"type": "string", "maxLength": 40},
            },
            "required": ["title", "priority", "done"],
            "additionalProperties": False,
        },
    ),
    (
        "Where is Paris? Give its coordinates and elevation.",
        {
            "type": "object",
            "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "elevation_m": {"type": "number", "minimum": -500, "maximum": 9000},
            },
            "required": ["latitude", "longitude", "elevation_m"],
            "additionalProperties": False,
        },
    ),
]
for n, (prompt, schema) in enumerate(schemas):
    for temperature in (0, 1):
        for seed in range(4):
            r = client.chat.completions.create(
                model="coder",
                messages=[{"role": "user", "content": prompt}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": f"schema{n}", "schema": schema, "strict": True},
                },
                temperature=temperature,
                seed=seed,
                max_tokens=200,
            )
            text = r.choices[0].message.content
            try:
                value = json.loads(text)
                jsonschema.validate(value, schema)
            except Exception as e:  # report which answer failed
                raise AssertionError(f"schema {n}, t={temperature}, seed {seed}: {e}: {text!r}")
            check(r.choices[0].finish_reason == "stop", f"schema {n}: {r.choices[0].finish_reason}")
    print(f"schema {n}: {text}")
for seed in range(4):
    r = client.chat.completions.create(
        model="coder",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        temperature=1,
        seed=seed,
        max_tokens=200,
    )
    value = json.loads(r.choices[0].message.content)
    check(isinstance(value, dict), f"json_object answer {value!r}")

print(f"openai agent: {checks} passed, 0 failed")
