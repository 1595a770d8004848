#!/usr/bin/env bash
# The main job on a fresh machine: fetch the real small models, build gllm, and
# embed, rerank and generate with them (GPU if one is usable, else the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
# Mesa (the software Vulkan device) complains without one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null
cargo build --release --bin gllm
gllm=target/release/gllm
[ -n "${CARGO_TARGET_DIR:-}" ] && gllm="$CARGO_TARGET_DIR/release/gllm"

set -x
"$gllm" models
"$gllm" embed --model minilm "The quick brown fox jumps over the lazy dog." "A fast auburn fox leapt over a sleepy hound." | cut -c1-160
"$gllm" rerank --model tiny-reranker --query "how to learn rust" "Rust is a systems language." "Sourdough needs a starter."
"$gllm" generate --model smollm2 --temperature 0 --max-tokens 32 "The capital of France is"
# A model file by path, no manifest entry needed.
"$gllm" generate --model "$GLLM_TEST_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" --temperature 0 --max-tokens 16 "The capital of France is"
"$gllm" chat --model smollm2 --temperature 0 --max-tokens 48 "What are three common fruits?"
"$gllm" chat --model qwen-coder --temperature 0 --max-tokens 96 "Write a Python function that returns the factorial of n."
