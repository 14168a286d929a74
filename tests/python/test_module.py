"""The Python module imports from the build tree and reports its version."""

import re

import chatai


def test_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", chatai.__version__)
    assert chatai.version() == chatai.__version__


def test_error_type_is_an_exception():
    assert issubclass(chatai.Error, RuntimeError)


def test_model_file_is_installed(test_model):
    with open(test_model, "rb") as f:
        assert f.read(4) == b"GGUF"
