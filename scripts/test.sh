#!/usr/bin/env bash
# Runs every test of the workspace, as CI does. On a fresh machine it first installs
# what the tests need: Mesa's software Vulkan driver (llvmpipe, for the wgpu code path)
# and the real models (scripts/fetch-models.sh). Nothing is skipped: a missing
# fixture or model fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing mesa-vulkan-drivers (llvmpipe software Vulkan) for the wgpu tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "error: the wgpu tests need Mesa's software Vulkan driver: sudo apt-get install mesa-vulkan-drivers" >&2
    exit 1
  fi
fi

export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null

# One build profile (release) for tests, binaries and benchmarks.
cargo test --release --workspace "$@"
