"""chatai: a Slurm-native, OpenAI-compatible LLM service (Python bindings)."""

from ._chatai import (Error, Gateway, GGUFFile, GGUFTensor, GGUFWriter, Model, Scheduler, Server, Stream, Tunnel,
                      TunnelStream, __version__, version)

from . import gate

__all__ = ["Error", "gate", "Gateway", "GGUFFile", "GGUFTensor", "GGUFWriter", "Model", "Scheduler", "Server", "Stream",
           "Tunnel", "TunnelStream", "__version__", "version"]
