"""chatai: a Slurm-native, OpenAI-compatible LLM service (Python bindings)."""

from ._chatai import Error, __version__, version

__all__ = ["Error", "__version__", "version"]
