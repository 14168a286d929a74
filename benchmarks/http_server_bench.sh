#!/bin/sh
# Drives http_server_bench with wrk over keep-alive connections and prints requests/s.
# Builds nothing: BUILD_DIR (default: build) must hold benchmarks/http_server_bench.
# Usage: benchmarks/http_server_bench.sh [io-threads] [wrk-threads] [connections] [duration]
set -eu
build_dir=${BUILD_DIR:-build}
io_threads=${1:-1}
wrk_threads=${2:-1}
connections=${3:-64}
duration=${4:-10s}
port=${PORT:-18080}

bench="$build_dir/benchmarks/http_server_bench"
[ -x "$bench" ] || { echo "no $bench: build the benchmarks first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

"$bench" --port "$port" --threads "$io_threads" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
sleep 0.5

wrk -t"$wrk_threads" -c"$connections" -d"$duration" "http://127.0.0.1:$port/" | tee /dev/stderr |
  awk '/^Requests\/sec:/ { print "requests/s: " $2 }'
