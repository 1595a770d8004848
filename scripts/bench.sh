#!/usr/bin/env bash
# Reproduces the README's benchmark tables. Run it on a quiet machine.
#
#   scripts/bench.sh            both parts
#   scripts/bench.sh --gllm     gllm alone: embeddings, the Qwen2-0.5B shape in each format, SmolLM2,
#                               eight concurrent streams
#   scripts/bench.sh --encoders gllm f32 and int8 beside onnxruntime f32 and int8 on all-MiniLM-L6-v2
#                               (bench/compare-encoders.py, in the peers' Python venv below)
#   scripts/bench.sh --peers    gllm beside llama.cpp on the same GGUF files, one run per file
#                               (../shared/bench/compare-llama-cpp.sh): the Qwen2-0.5B shape quantized by
#                               llama.cpp's llama-quantize to Q4_0, Q8_0, Q4_K_M, Q5_K_M, Q6_K, Q3_K_M and
#                               F16, and the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M; plus a 2048-token
#                               prompt for Q4_0 and Q4_K_M, with llama.cpp's decode at depth 2048;
#                               and the Qwen3-0.6B shape in Q4_K_M.
#
# llama.cpp is built once by ../shared/bench/build-llama-cpp.sh (cached in ~/.cache/gllm-peers), or
# taken from LLAMA_CPP_DIR. On an Intel CPU that lists AMX but whose kernel does not grant AMX tiles to
# processes, that native build dies with SIGILL in ggml's AMX kernels: build it with
# CMAKE_C_FLAGS/CMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" and point LLAMA_CPP_DIR at it.
# The source model (the synthesized safetensors) is converted to F16 GGUF with llama.cpp's
# convert_hf_to_gguf.py, then quantized by llama-quantize.
#
# The peers' Python (torch, transformers, onnx, onnxruntime, sentencepiece) is one venv,
# ~/.cache/gllm-peers/ort-venv, made on first use from the package index (a few GiB: PyPI's
# torch brings its CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:-all}"
export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
export GLLM_BENCH_DIR="${GLLM_BENCH_DIR:-/tmp/gllm-bench-qwen05}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null

# Prints the peers' venv Python, making the venv first if it lacks a package.
peer_python() {
  local venv="$HOME/.cache/gllm-peers/ort-venv"
  if ! "$venv/bin/python" -c "import torch, transformers, onnx, onnxruntime, sentencepiece" 2>/dev/null; then
    echo "bench: installing the peers' Python packages into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch transformers onnx onnxruntime sentencepiece safetensors numpy >&2
  fi
  echo "$venv/bin/python"
}
cargo build --release --bin gllm
gllm="${CARGO_TARGET_DIR:-target}/release/gllm"
tokenizer=../shared/fixtures/tiny-qwen2/tokenizer.json
# bench/models.toml names every one of these files: synthesize when any is missing.
synth_missing=0
for f in model.safetensors model-f16.gguf model-q8_0.gguf model-q4_0.gguf; do
  [ -f "$GLLM_BENCH_DIR/$f" ] || synth_missing=1
done
if [ "$synth_missing" = 1 ]; then
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
  "$(peer_python)" bench/compare-encoders.py "$gllm" bench/models.toml \
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
    cp "$tokenizer" ../shared/fixtures/tiny-qwen2/tokenizer_config.json "$GLLM_BENCH_DIR/"
    "$(peer_python)" "$llama/convert_hf_to_gguf.py" "$GLLM_BENCH_DIR" --outtype f16 --outfile "$src"
  fi
  files=()
  for q in Q4_0 Q8_0 Q4_K_M Q5_K_M Q6_K Q3_K_M F16; do
    f="$peers/qwen2-0.5b-$q.gguf"
    [ -f "$f" ] || "$llama/bin/llama-quantize" "$src" "$f" "$q" >/dev/null
    files+=("$f")
  done
  # Five rounds per file (each engine's best of five): on a shared 2-core VM both engines move by
  # ±10% from one round to the next, and three rounds left the F16 ratio at the mercy of one.
  header=--header
  for f in "${files[@]}"; do
    ../shared/bench/compare-llama-cpp.sh "$f" --tokenizer "$tokenizer" --repeats 5 $header
    header=""
  done
  ../shared/bench/compare-llama-cpp.sh "$GLLM_TEST_MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" --repeats 5
  for q in Q4_0 Q4_K_M; do
    ../shared/bench/compare-llama-cpp.sh "$peers/qwen2-0.5b-$q.gguf" --tokenizer "$tokenizer" \
      --prompt-tokens 2048 --decode-tokens 64 --repeats 1
  done
  # In those rows gllm decodes after its 2048-token prompt, llama-bench's tg test from an empty
  # context: llama.cpp's decode at the same depth (-d 2048) is the figure to set gllm's beside.
  for q in Q4_0 Q4_K_M; do
    "$llama/bin/llama-bench" -m "$peers/qwen2-0.5b-$q.gguf" -p 0 -n 64 -d 2048 -t 2 -r 2 2>/dev/null |
      grep -E '^\| (model|.*d2048)'
  done
  # Qwen3: the Qwen3-0.6B shape, synthesized as F16 and quantized to Qwen's Q4_K_M.
  qwen3="$GLLM_BENCH_DIR/qwen3-0.6b"
  qwen3_tokenizer=../shared/fixtures/tiny-qwen3/tokenizer.json
  [ -f "$qwen3/model-f16.gguf" ] || "$gllm" synth --config ../shared/bench/qwen3-0.6b.config.json \
    --out "$qwen3" --formats f16 --tokenizer "$qwen3_tokenizer"
  [ -f "$qwen3/qwen3-0.6b-Q4_K_M.gguf" ] ||
    "$llama/bin/llama-quantize" "$qwen3/model-f16.gguf" "$qwen3/qwen3-0.6b-Q4_K_M.gguf" Q4_K_M >/dev/null
  ../shared/bench/compare-llama-cpp.sh "$qwen3/qwen3-0.6b-Q4_K_M.gguf" --tokenizer "$qwen3_tokenizer" --repeats 5
fi
