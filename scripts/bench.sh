#!/usr/bin/env bash
# Reproduces the README's benchmark tables. Run it on a quiet machine.
#
#   scripts/bench.sh            both parts
#   scripts/bench.sh --gllm     gllm alone: embeddings, the Qwen2-0.5B shape in each format, SmolLM2,
#                               eight concurrent streams
#   scripts/bench.sh --encoders gllm f32 and int8 beside onnxruntime f32 and int8 on all-MiniLM-L6-v2
#                               (bench/compare-encoders.py; torch, transformers, onnx and onnxruntime in
#                               a venv under ~/.cache/gllm-peers, made on first use from the package index)
#   scripts/bench.sh --peers    gllm beside llama.cpp on the same GGUF files, one run per file
#                               (../shared/bench/compare-llama-cpp.sh): the Qwen2-0.5B shape quantized by
#                               llama.cpp's llama-quantize to Q4_0, Q8_0, Q4_K_M, Q5_K_M, Q6_K, Q3_K_M and
#                               F16, and the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M; plus a 2048-token
#                               prompt for Q4_0 and Q4_K_M; and the Qwen3-0.6B shape in Q4_K_M.
#
# llama.cpp is built once by ../shared/bench/build-llama-cpp.sh (cached in ~/.cache/gllm-peers), or
# taken from LLAMA_CPP_DIR. On an Intel CPU that lists AMX but whose kernel does not grant AMX tiles to
# processes, that native build dies with SIGILL in ggml's AMX kernels: build it with
# CMAKE_C_FLAGS/CMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" and point LLAMA_CPP_DIR at it.
# The source model is converted with llama.cpp's convert_hf_to_gguf.py when its Python needs
# (torch, transformers) are importable; otherwise gllm synth writes the F16 GGUF that
# llama-quantize starts from (the same weights; say which in a report).
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:-all}"
export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
export GLLM_BENCH_DIR="${GLLM_BENCH_DIR:-/tmp/gllm-bench-qwen05}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null
cargo build --release --bin gllm
gllm="${CARGO_TARGET_DIR:-target}/release/gllm"
tokenizer=../shared/fixtures/tiny-qwen2/tokenizer.json
if [ ! -f "$GLLM_BENCH_DIR/model-f16.gguf" ]; then
  "$gllm" synth --config ../shared/bench/qwen2-0.5b.config.json --out "$GLLM_BENCH_DIR" \
    --formats safetensors,f16,q8_0,q4_0 --tokenizer "$tokenizer"
fi

if [ "$part" = all ] || [ "$part" = --gllm ]; then
  "$gllm" --manifest bench/models.toml bench embed --model minilm --corpus ../shared/bench/corpus.txt
  for m in qwen05-burn qwen05-candle qwen05-q8_0 qwen05-q4_0 smollm2; do
    "$gllm" --manifest bench/models.toml bench generate --model "$m"
  done
  # Eight sequences decoding at once (a server under load): their steps share batches.
  for m in qwen05-candle qwen05-q4_0 smollm2; do
    "$gllm" --manifest bench/models.toml bench generate --model "$m" --streams 8
  done
fi

if [ "$part" = all ] || [ "$part" = --encoders ]; then
  venv="$HOME/.cache/gllm-peers/ort-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch transformers onnx onnxruntime
  fi
  "$venv/bin/python" bench/compare-encoders.py "$gllm" bench/models.toml \
    "$GLLM_TEST_MODELS/all-MiniLM-L6-v2" ../shared/bench/corpus.txt "$HOME/.cache/gllm-peers/onnx-minilm"
fi

if [ "$part" = all ] || [ "$part" = --peers ]; then
  # LLAMA_CPP_DIR: a llama.cpp build holding bin/ (default: build-llama-cpp.sh's cache).
  llama="${LLAMA_CPP_DIR:-$(../shared/bench/build-llama-cpp.sh | tail -n 1)}"
  export LLAMA_CPP_DIR="$llama"
  peers="$GLLM_BENCH_DIR/llama.cpp"
  mkdir -p "$peers"
  src="$peers/source-f16.gguf"
  if [ ! -f "$src" ]; then
    if python3 -c "import torch, transformers" >/dev/null 2>&1; then
      cp "$tokenizer" ../shared/fixtures/tiny-qwen2/tokenizer_config.json "$GLLM_BENCH_DIR/"
      python3 "$llama/convert_hf_to_gguf.py" "$GLLM_BENCH_DIR" --outtype f16 --outfile "$src"
    else
      echo "bench: torch/transformers are not importable; quantizing gllm synth's F16 GGUF instead" >&2
      cp "$GLLM_BENCH_DIR/model-f16.gguf" "$src"
    fi
  fi
  files=()
  for q in Q4_0 Q8_0 Q4_K_M Q5_K_M Q6_K Q3_K_M F16; do
    f="$peers/qwen2-0.5b-$q.gguf"
    [ -f "$f" ] || "$llama/bin/llama-quantize" "$src" "$f" "$q" >/dev/null
    files+=("$f")
  done
  header=--header
  for f in "${files[@]}"; do
    ../shared/bench/compare-llama-cpp.sh "$f" --tokenizer "$tokenizer" $header
    header=""
  done
  ../shared/bench/compare-llama-cpp.sh "$GLLM_TEST_MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
  for q in Q4_0 Q4_K_M; do
    ../shared/bench/compare-llama-cpp.sh "$peers/qwen2-0.5b-$q.gguf" --tokenizer "$tokenizer" \
      --prompt-tokens 2048 --decode-tokens 64 --repeats 1
  done
  # Qwen3: the Qwen3-0.6B shape, synthesized as F16 and quantized to Qwen's Q4_K_M.
  qwen3="$GLLM_BENCH_DIR/qwen3-0.6b"
  qwen3_tokenizer=../shared/fixtures/tiny-qwen3/tokenizer.json
  [ -f "$qwen3/model-f16.gguf" ] || "$gllm" synth --config ../shared/bench/qwen3-0.6b.config.json \
    --out "$qwen3" --formats f16 --tokenizer "$qwen3_tokenizer"
  [ -f "$qwen3/qwen3-0.6b-Q4_K_M.gguf" ] ||
    "$llama/bin/llama-quantize" "$qwen3/model-f16.gguf" "$qwen3/qwen3-0.6b-Q4_K_M.gguf" Q4_K_M >/dev/null
  ../shared/bench/compare-llama-cpp.sh "$qwen3/qwen3-0.6b-Q4_K_M.gguf" --tokenizer "$qwen3_tokenizer"
fi
