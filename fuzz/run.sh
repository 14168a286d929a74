#!/usr/bin/env bash
# Runs every libFuzzer target of the `fuzz` preset for SECONDS each (default 600), JOBS at a
# time (default 2), each on a working corpus fuzz/corpus-<target>/ seeded from fuzz/corpus/.
# Prints one line per target (runs, coverage, crash or not) and exits non-zero when one crashed;
# a crash leaves its input as fuzz/crash-<target>-*.
# Targets named after JOBS are the only ones run.
#   cmake --preset fuzz && cmake --build --preset fuzz && bash fuzz/run.sh [SECONDS] [JOBS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-600}
jobs=${2:-2}
bin=$root/build-fuzz/fuzz
templates=$root/../shared/testdata/templates

seeds_of() {
  case "$1" in
    fuzz_http_parser) echo "$root/fuzz/corpus/http" ;;
    fuzz_gguf) echo "$root/fuzz/corpus/gguf" ;;
    fuzz_gate_request) echo "$root/fuzz/corpus/gate" ;;
    fuzz_gateway) echo "$root/fuzz/corpus/gateway" ;;
    fuzz_serve_request) echo "$root/fuzz/corpus/serve" ;;
    fuzz_frames) echo "$root/fuzz/corpus/frames" ;;
    fuzz_json_schema) echo "$root/fuzz/corpus/schema" ;;
    fuzz_chat_template) [ -d "$templates" ] && echo "$templates" ;;
  esac
}

run_one() {
  local target=$1 work=$root/fuzz/corpus-$1 log=$root/fuzz/corpus-$1.log
  mkdir -p "$work"
  local seeds
  seeds=$(seeds_of "$target" || true)
  if "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$root/fuzz/crash-$target-" "$work" ${seeds:+"$seeds"} >"$log" 2>&1; then
    echo "$target: no crash in ${seconds}s; $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs," \
         "$(grep -oE 'cov: [0-9]+' "$log" | tail -1)"
  else
    echo "$target: FAILED, see $log"
    return 1
  fi
}

targets=(fuzz_http_parser fuzz_gguf fuzz_gate_request fuzz_chat_template fuzz_gateway fuzz_serve_request fuzz_frames)
if [ $# -gt 2 ]; then targets=("${@:3}"); fi
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "fuzz/run.sh: $bin/$t is not built (cmake --build --preset fuzz)" >&2; exit 2; }
done
failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
