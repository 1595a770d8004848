#!/usr/bin/env bash
# Fuzzes what reads untrusted input (fuzz/fuzz_targets): GGUF metadata and the tokenizer
# rebuilt from it, chat templates, tool calls in model output, whole GGUF files and
# Hugging Face model directories as the backends load and run them, and the server's
# request bodies through its real routes. Not CI: it needs
# a nightly toolchain and cargo-fuzz (`cargo +nightly install cargo-fuzz`), and libFuzzer
# is C++ (fuzz/ is its own workspace, outside the default build).
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET...]
#
# Each target starts from its seeds (fuzz/seeds/TARGET, under version control, with every
# input that once crashed) and a working corpus in fuzz/corpus (ignored by git). A crash
# stops the run; its input lands in fuzz/artifacts/TARGET: add it to the seeds with the fix.
# The last lines print executions and coverage per target, for the README.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(gguf_metadata chat_template tool_calls gguf_model hf_model request_bodies)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "error: needs cargo-fuzz on a nightly toolchain: cargo +nightly install cargo-fuzz" >&2
  exit 1
fi
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true
  # GGUF seeds of k-quant models (256 wide) are up to 330 KB; everything else fits in 64 KB.
  max_len=65536
  [ "$t" = gguf_model ] && max_len=393216
  echo "== $t: ${secs} s" >&2
  cargo +nightly fuzz run --release "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"logs/$t.log" 2>&1 || {
      echo "error: $t failed; see fuzz/logs/$t.log and fuzz/artifacts/$t" >&2
      tail -30 "logs/$t.log" >&2
      exit 1
    }
done
for t in "${targets[@]}"; do
  runs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "logs/$t.log" | awk '{print $2}' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "logs/$t.log" | tail -1)
  rss=$(grep -oE 'stat::peak_rss_mb: +[0-9]+' "logs/$t.log" | awk '{print $2}' | tail -1)
  echo "$t: ${runs:-?} executions in ${secs} s, ${cov:-cov ?}, peak RSS ${rss:-?} MB, no crash"
done
