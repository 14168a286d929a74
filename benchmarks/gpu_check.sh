#!/usr/bin/env bash
# The CUDA backend on a GPU machine in one call, from the repository root: builds with CUDA
# (Release), runs the GPU tests, synthesizes real-size models into a scratch folder, measures
# device-to-device copy bandwidth, the decode kernels alone (kernel_bench: microseconds and
# GB/s of each matrix-vector kernel and of attention) and `chatai bench` decode and prefill
# speed, and prints a table last: decode tokens/s at batch 1, 8 and 64 (each as a percentage
# of the bandwidth roofline: batch x bandwidth / weight bytes read per step) and prefill
# tokens/s.
#
# Usage: benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--deps DIR] [--build-dir DIR]
#                                [--scratch DIR] [--no-build] [--no-tests] [--shapes LIST] [--types LIST]
#                                [--cuda-arch LIST] [--archs LIST]
#   --archs LIST           architectures each shape is synthesized in (default llama); rows are
#                          named shape/arch when more than llama is asked for.
#   --cuda-arch LIST       CMAKE_CUDA_ARCHITECTURES of the build (default native: the GPU present).
#   --deps DIR             what benchmarks/gpu_deps.sh prepared: its packages are added to the
#                          system where files are missing (never replacing one), and its
#                          tokenizers serve `chatai synth`.
#   --device cpu --quick   the same steps on the CPU with a small model and short runs, no CUDA
#                          build and no GPU tests: checks the script itself on any machine.
set -euo pipefail

device=cuda
quick=0
deps=
build_dir=
scratch=${TMPDIR:-/tmp}/chatai-gpu-check
build=1
tests=1
shapes="smollm2-135m llama-3.2-1b llama-3.1-8b"
types="q8_0 q4_k bf16"
batches="1 8 64"
prompt=512
decode=64
jobs=16
cuda_arch=native
archs=llama

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
need() { [ "$#" -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --device) need "$@"; device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --deps) need "$@"; deps=$2; shift 2 ;;
    --build-dir) need "$@"; build_dir=$2; shift 2 ;;
    --scratch) need "$@"; scratch=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --no-tests) tests=0; shift ;;
    --shapes) need "$@"; shapes=${2//,/ }; shift 2 ;;
    --types) need "$@"; types=${2//,/ }; shift 2 ;;
    --cuda-arch) need "$@"; cuda_arch=$2; shift 2 ;;
    --archs) need "$@"; archs=${2//,/ }; shift 2 ;;
    -h|--help) usage ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$device" in
  cuda|cpu) ;;
  *) echo "gpu_check.sh: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;;
esac
if [ "$quick" = 1 ]; then
  shapes="smollm2-135m"
  types="q8_0"
  batches="1 2"
  prompt=16
  decode=4
fi
if [ "$device" = cpu ]; then
  build_dir=${build_dir:-build}
  build=0
  tests=0
else
  build_dir=${build_dir:-build-gpu}
fi

start=$(date +%s)
log() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }
failed=0
mkdir -p "$scratch"

synth_flags=()
if [ -n "$deps" ]; then
  [ -d "$deps/debs" ] || { echo "gpu_check.sh: --deps $deps holds no debs/: run benchmarks/gpu_deps.sh" >&2; exit 2; }
  log "dependencies from $deps"
  stage=$(mktemp -d)
  for deb in "$deps"/debs/*.deb; do dpkg -x "$deb" "$stage"; done
  if [ -d "$stage/lib" ]; then  # merged /usr: what Debian puts in /lib belongs in /usr/lib
    mkdir -p "$stage/usr/lib"
    cp -a "$stage/lib/." "$stage/usr/lib/"
    rm -rf "${stage:?}/lib"
  fi
  # Never replace a file the system has (newer coreutils report each skipped file as a failure).
  cp -a -n "$stage/usr/." /usr/ 2>/dev/null || true
  rm -rf "$stage"
  ldconfig
  synth_flags=(--tokenizer-dir "$deps/tokenizers")
fi

if [ "$build" = 1 ]; then
  log "configure and build $build_dir (Release, CUDA, -j$jobs)"
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCHATAI_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$cuda_arch" \
    -DCHATAI_BUILD_PYTHON=OFF -DCHATAI_BUILD_TESTS=ON -DCHATAI_BUILD_BENCHMARKS=ON >"$scratch/configure.log" 2>&1 ||
    { cat "$scratch/configure.log" >&2; exit 1; }
  cmake --build "$build_dir" -j"$jobs" --target chatai_cli test_engine_cuda test_engine_cuda_host copy_bandwidth kernel_bench
fi
chatai=$build_dir/bin/chatai
[ -x "$chatai" ] || { echo "gpu_check.sh: no $chatai: build it first" >&2; exit 1; }

if [ "$tests" = 1 ]; then
  for t in test_engine_cuda_host test_engine_cuda; do
    log "test $t"
    if ! (cd "$build_dir/tests/engine" && "./$t"); then
      echo "gpu_check.sh: $t FAILED" >&2
      failed=1
    fi
  done
fi

bandwidth=
if [ "$device" = cuda ]; then
  log "copy bandwidth"
  bw_json=$("$build_dir/benchmarks/copy_bandwidth" 1024)
  echo "$bw_json" >&2
  bandwidth=$(sed -n 's/.*"bandwidth_gb_per_s":\([0-9.]*\).*/\1/p' <<<"$bw_json")
  log "decode kernels alone (kernel_bench)"
  kb_flags=()
  [ "$quick" = 1 ] && kb_flags=(--quick)
  "$build_dir/benchmarks/kernel_bench" "${kb_flags[@]}" >&2 || { echo "gpu_check.sh: kernel_bench FAILED" >&2; failed=1; }
fi

results=$scratch/results.txt
: >"$results"
for shape in $shapes; do
  for arch in $archs; do
    row=$shape
    [ "$archs" = llama ] || row=$shape/$arch
    for type in $types; do
      model=$scratch/$shape-$type.gguf
      [ "$arch" = llama ] || model=$scratch/$shape-$arch-$type.gguf
      if [ ! -s "$model" ]; then
        log "synth $shape $arch $type"
        "$chatai" synth --shape "$shape" --arch "$arch" --type "$type" --seed 1 "${synth_flags[@]}" -o "$model" >&2
      fi
      log "bench $row $type, batches $batches"
      echo "$row $type - {}" >>"$results"  # the model's row, whatever the bench does
      output=$("$chatai" --log-level warn bench -m "$model" --device "$device" -p "$prompt" -n "$decode" \
               -b "${batches// /,}" -r 2 --json) || { echo "gpu_check.sh: bench $row $type FAILED" >&2; failed=1; }
      while IFS= read -r json; do
        [ -n "$json" ] || continue
        batch=$(sed -n 's/.*"batch":\([0-9]*\).*/\1/p' <<<"$json")
        echo "$row $type $batch $json" >>"$results"
      done <<<"$output"
    done
  done
done

log "done"
# The table: one row per model; decode tokens/s per batch with the percentage of the
# roofline, then prefill tokens/s of the first batch's run.
awk -v bw="$bandwidth" -v batches="$batches" -v prompt="$prompt" '
  function field(json, key,    m) {
    if (match(json, "\"" key "\":[0-9.]+")) { m = substr(json, RSTART, RLENGTH); sub(/.*:/, "", m); return m + 0 }
    return -1
  }
  {
    key = $1 " " $2
    json = substr($0, index($0, "{"))
    if (!(key in seen)) { seen[key] = 1; order[++n] = key; prefill[key] = -1 }
    if ($3 == "-") next
    tps = field(json, "decode_tokens_per_s"); bytes = field(json, "weight_bytes_per_step")
    decode[key, $3] = tps
    if (prefill[key] < 0) prefill[key] = field(json, "prefill_tokens_per_s")
    if (bytes > 0) wbytes[key] = bytes
  }
  END {
    nb = split(batches, b, " ")
    printf "%-20s %-5s %9s", "shape", "type", "weights"
    for (i = 1; i <= nb; i++) printf " %20s", "decode b" b[i] " tok/s"
    printf " %16s\n", "prefill " prompt " tok/s"
    for (r = 1; r <= n; r++) {
      split(order[r], k, " ")
      printf "%-20s %-5s %8.0fM", k[1], k[2], wbytes[order[r]] / 1e6
      for (i = 1; i <= nb; i++) {
        if (!((order[r], b[i]) in decode) || decode[order[r], b[i]] < 0) { printf " %20s", "failed"; continue }
        t = decode[order[r], b[i]]
        if (bw != "" && wbytes[order[r]] > 0) {
          roof = b[i] * bw * 1e9 / wbytes[order[r]]
          printf " %11.1f (%4.0f%%)", t, 100 * t / roof
        } else {
          printf " %11.1f (  n/a)", t
        }
      }
      if (prefill[order[r]] < 0) printf " %16s\n", "failed"
      else printf " %16.1f\n", prefill[order[r]]
    }
    if (bw != "") printf "copy bandwidth: %s GB/s (read + write); roofline = batch x bandwidth / weight bytes per step\n", bw
    else printf "copy bandwidth: not measured on the CPU\n"
    # The goals: 1B batch 1 at >= 80% of the roofline, 135M batch 1 above 5000 tokens/s,
    # 1B batch 64 at least 10 times batch 1.
    for (r = 1; r <= n; r++) {
      split(order[r], k, " ")
      sub(/\/llama$/, "", k[1])
      one = ((order[r], 1) in decode) ? decode[order[r], 1] : -1
      if (one <= 0) continue
      if (k[1] == "llama-3.2-1b" && bw != "" && wbytes[order[r]] > 0) {
        pct = 100 * one * wbytes[order[r]] / (bw * 1e9)
        printf "goal 1B %-5s batch 1 at %.0f%% of the roofline (>= 80%%): %s\n", k[2], pct, (pct >= 80 ? "met" : "missed")
      }
      if (k[1] == "smollm2-135m") {
        printf "goal 135M %-5s batch 1 at %.0f tokens/s (> 5000): %s\n", k[2], one, (one > 5000 ? "met" : "missed")
      }
      if (k[1] == "llama-3.2-1b" && ((order[r], 64) in decode)) {
        ratio = decode[order[r], 64] / one
        printf "goal 1B %-5s batch 64 at %.1f times batch 1 (>= 10): %s\n", k[2], ratio, (ratio >= 10 ? "met" : "missed")
      }
    }
  }' "$results" | tee "$scratch/table.txt"
# The device tool brings back what a command leaves in $OUT.
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp "$results" "$scratch/table.txt" "$OUT/"; fi
exit "$failed"
