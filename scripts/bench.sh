#!/usr/bin/env bash
# Reproduces the README's benchmark table: fetches the real models, synthesizes the
# Qwen2-0.5B shape (random weights) once, and runs `gllm bench` for every row.
# Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
export GLLM_BENCH_DIR="${GLLM_BENCH_DIR:-/tmp/gllm-bench-qwen05}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null
cargo build --release --bin gllm
gllm="${CARGO_TARGET_DIR:-target}/release/gllm"
if [ ! -f "$GLLM_BENCH_DIR/model-q4_0.gguf" ]; then
  "$gllm" synth --config ../shared/bench/qwen2-0.5b.config.json --out "$GLLM_BENCH_DIR" \
    --formats safetensors,q8_0,q4_0 --tokenizer ../shared/fixtures/tiny-qwen2/tokenizer.json
fi
"$gllm" --manifest bench/models.toml bench embed --model minilm --corpus ../shared/bench/corpus.txt
for m in qwen05-burn qwen05-candle qwen05-q8_0 qwen05-q4_0 smollm2; do
  "$gllm" --manifest bench/models.toml bench generate --model "$m"
done
# Eight sequences decoding at once (a server under load): their steps share batches.
for m in qwen05-candle qwen05-q4_0 smollm2; do
  "$gllm" --manifest bench/models.toml bench generate --model "$m" --streams 8
done
