"""Drives a running `gllm serve` with the official `openai` Python client and checks
the answers against the fixtures' reference numbers.

usage: python3 openai_client.py BASE_URL FIXTURES_DIR

BASE_URL is the server's root (http://127.0.0.1:PORT); FIXTURES_DIR holds tiny-bert/,
tiny-cross-encoder/ and tiny-qwen2/ with their reference.json. Exits non-zero on any
mismatch; prints "openai client: N passed, 0 failed" at the end.
"""

import base64
import json
import struct
import sys

import openai  # a missing package is a failure, never a skip

base_url, fixtures = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="sk-test", max_retries=0)
checks = 0


def check(ok, what):
    global checks
    if not ok:
        raise AssertionError(what)
    checks += 1


def close(a, b, tol=1e-5):
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= tol


bert = json.load(open(f"{fixtures}/tiny-bert/reference.json"))
qwen = json.load(open(f"{fixtures}/tiny-qwen2/reference.json"))

# /v1/models
models = client.models.list()
ids = [m.id for m in models.data]
check(ids == ["tiny-bert", "tiny-cross-encoder", "tiny-qwen2"], f"models {ids}")
check(all(m.owned_by == "gllm" and m.object == "model" for m in models.data), "model objects")

# /v1/embeddings: floats, then base64 decoded by hand
sentences = bert["sentences"]
r = client.embeddings.create(model="tiny-bert", input=sentences, encoding_format="float")
check(len(r.data) == len(sentences), "one row per sentence")
for row, want in zip(r.data, bert["embeddings"]):
    check(close(row.embedding, want), f"embedding {row.index}")
tokens = sum(len(ids) for ids in bert["input_ids"])
check(r.usage.prompt_tokens == tokens, f"usage {r.usage.prompt_tokens} != {tokens}")

raw = client.embeddings.with_raw_response.create(
    model="tiny-bert", input=sentences[0], encoding_format="base64"
)
payload = json.loads(raw.text)
b = base64.b64decode(payload["data"][0]["embedding"])
vec = list(struct.unpack(f"<{len(b) // 4}f", b))
check(close(vec, bert["embeddings"][0]), "base64 embedding")

# the client's own decoding of base64 (what it does when the format is left to it)
r = client.embeddings.create(model="tiny-bert", input=[sentences[3]], encoding_format="base64")
emb = r.data[0].embedding
if isinstance(emb, str):
    b = base64.b64decode(emb)
    emb = list(struct.unpack(f"<{len(b) // 4}f", b))
check(close(list(emb), bert["embeddings"][3]), "client-decoded base64 embedding")

r = client.embeddings.create(model="tiny-bert", input=sentences[1], dimensions=8)
v = r.data[0].embedding
norm = sum(x * x for x in bert["embeddings"][1][:8]) ** 0.5
check(close(v, [x / norm for x in bert["embeddings"][1][:8]]), "dimensions=8")

# /v1/chat/completions, greedy, whole and streamed
cases = [c for c in qwen["chat_template"] if "enable_thinking" not in c]
check(len(cases) >= 2, "chat cases")
for case in cases:
    want = case["greedy_8"]["text_skip_special"]
    r = client.chat.completions.create(
        model="tiny-qwen2", messages=case["messages"], temperature=0, max_tokens=8
    )
    check(r.choices[0].message.content == want, f"chat text {r.choices[0].message.content!r}")
    check(r.choices[0].message.role == "assistant", "role")
    check(r.choices[0].finish_reason == "length", "finish_reason")
    check(r.usage.completion_tokens == 8, "completion tokens")
    check(r.usage.prompt_tokens == len(case["input_ids"]), "prompt tokens")

    stream = client.chat.completions.create(
        model="tiny-qwen2",
        messages=case["messages"],
        temperature=0,
        max_completion_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(text == want, f"streamed text {text!r}")
    check(finish == "length", "streamed finish_reason")
    check(usage is not None and usage.completion_tokens == 8, "streamed usage")

# errors surface as the client's typed exceptions
try:
    client.embeddings.create(model="no-such-model", input="x")
    check(False, "unknown model accepted")
except openai.NotFoundError as e:
    check(e.status_code == 404, "404")
try:
    client.chat.completions.create(model="tiny-qwen2", messages=[], max_tokens=1)
    check(False, "empty messages accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400, "400")

# n = 3 with a seed: choice i is what a single request with seed + i answers.
hello = [{"role": "user", "content": "Hello"}]
many = client.chat.completions.create(
    model="tiny-qwen2", messages=hello, temperature=1, seed=11, n=3, max_tokens=8
)
check(len(many.choices) == 3, f"n=3 gave {len(many.choices)} choices")
for i, c in enumerate(many.choices):
    alone = client.chat.completions.create(
        model="tiny-qwen2", messages=hello, temperature=1, seed=11 + i, max_tokens=8
    )
    check(c.index == i, "choice index")
    check(
        c.message.content == alone.choices[0].message.content,
        f"choice {i}: {c.message.content!r} vs {alone.choices[0].message.content!r}",
    )
check(many.usage.completion_tokens == 24, f"usage {many.usage}")

# logprobs: greedy, so the most likely alternative at each step is the token taken.
r = client.chat.completions.create(
    model="tiny-qwen2", messages=hello, temperature=0, max_tokens=6, logprobs=True, top_logprobs=5
)
entries = r.choices[0].logprobs.content
check(len(entries) == 6, f"{len(entries)} logprob entries")
check(
    b"".join(bytes(e.bytes) for e in entries).decode("utf-8", "replace") == r.choices[0].message.content,
    "the tokens make up the answer",
)
for e in entries:
    check(len(e.top_logprobs) == 5, "5 alternatives")
    check(e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob, f"top-1 {e}")
    check(all(a.logprob >= b.logprob for a, b in zip(e.top_logprobs, e.top_logprobs[1:])), "sorted")
try:
    client.chat.completions.create(
        model="tiny-qwen2", messages=hello, max_tokens=1, logprobs=True, top_logprobs=21
    )
    check(False, "top_logprobs 21 accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400, "400 for top_logprobs 21")

print(f"openai client {openai.__version__}: {checks} passed, 0 failed")
