#!/usr/bin/env bash
# Soak test (not CI): starts `gllm serve` on the tiny fixture models (an embedder, a
# cross-encoder, a decoder) on loopback and runs bench/soak.py against it: mixed embed,
# rerank and streamed chat load for MINUTES (default 30), RSS sampled each minute.
# usage: scripts/soak.sh [MINUTES] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
clients="${2:-6}"
fixtures="$(cd ../shared/fixtures && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gllm-ci-target}"
# The same build as the tests (one profile, the workspace's features): no rebuild.
cargo test --release --workspace --no-run >&2
dir="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/models.toml" <<TOML
[defaults]
devices = ["cpu"]
[[models]]
id = "tiny-bert"
task = "embed"
path = "$fixtures/tiny-bert"
[[models]]
id = "tiny-cross-encoder"
task = "rerank"
path = "$fixtures/tiny-cross-encoder"
[[models]]
id = "tiny-qwen2"
task = "generate"
path = "$fixtures/tiny-qwen2"
TOML
"$CARGO_TARGET_DIR/release/gllm" --manifest "$dir/models.toml" serve --port 0 2>"$dir/serve.log" &
pid=$!
addr=""
for _ in $(seq 1 600); do
  addr="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$dir/serve.log" | head -1)"
  if [ -n "$addr" ] && curl -sf "http://$addr/health" >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done
[ -n "$addr" ] || { cat "$dir/serve.log" >&2; exit 1; }
python3 bench/soak.py "http://$addr" "$pid" "$minutes" "$clients"
