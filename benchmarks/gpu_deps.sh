#!/usr/bin/env bash
# Prepares what benchmarks/gpu_check.sh needs on a GPU machine that cannot download: the
# Debian packages of the build dependencies its image may lack (header-only libraries,
# libssh and pkg-config) and the two tokenizers `chatai synth` borrows. Run it here, from
# the repository root, then carry the folder (.gitignore lists .gpu-deps) and pass it on:
#   benchmarks/gpu_deps.sh [.gpu-deps]      # then, on the GPU machine:
#   benchmarks/gpu_check.sh --deps .gpu-deps
set -euo pipefail

out=${1:-.gpu-deps}
packages=(
  libasio-dev rapidjson-dev doctest-dev libcli11-dev
  libssh-dev libssh-4 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2
  pkg-config pkgconf pkgconf-bin libpkgconf3
  libsqlite3-dev libsqlite3-0
)
tokenizers=(ggml-vocab-llama-spm.gguf ggml-vocab-deepseek-llm.gguf)

mkdir -p "$out/debs" "$out/tokenizers"
(cd "$out/debs" && apt-get download "${packages[@]}")
for t in "${tokenizers[@]}"; do
  src=../shared/testdata/tokenizers/$t
  [ -f "$src" ] || { echo "gpu_deps.sh: no $src" >&2; exit 1; }
  cp "$src" "$out/tokenizers/"
done
du -sh "$out"
