#!/usr/bin/env bash
# Runs every test of the workspace, as CI does. On a fresh machine it first installs
# what the tests need: Mesa's software Vulkan driver (llvmpipe, for the wgpu code path),
# the `openai` Python package (the server's client test) and the real models
# (scripts/fetch-models.sh). Nothing is skipped: a missing fixture or model fails the run.
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

# The server's client tests use the official `openai` Python package, and check
# structured outputs with `jsonschema`.
if ! python3 -c "import openai, jsonschema" >/dev/null 2>&1; then
  echo "installing the openai and jsonschema Python packages for the server's client tests" >&2
  python3 -m pip install -q openai jsonschema
fi

# The wgpu tests run on Mesa's llvmpipe, a software rasterizer, which `gpu` means only when asked for.
export GLLM_SOFTWARE_GPU=1
export GLLM_TEST_MODELS="${GLLM_TEST_MODELS:-$HOME/.cache/gllm-test-models}"
scripts/fetch-models.sh "$GLLM_TEST_MODELS" >/dev/null

# The default build compiles no C or C++: nothing may depend on the `cc` crate.
# (Normal edges too: `-e build` alone does not follow the normal dependency that
# leads to a crate whose build script uses cc, e.g. ureq -> rustls -> ring.)
if [ -n "$(cargo tree -e normal,build -i cc 2>/dev/null)" ]; then
  echo "error: the default build compiles C/C++ code; these dependencies pull in the cc crate:" >&2
  cargo tree -e normal,build -i cc >&2
  exit 1
fi

# One build profile (release) for tests, binaries and benchmarks.
cargo test --release --workspace "$@"

# The non-default `download` feature (HTTPS through rustls + ring, hence not in the
# default build): hf = "org/name" models fetched from a local stand-in for the Hub.
cargo test --release -p gllm-runtime --features download --test hub_download
