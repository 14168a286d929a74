"""Gate protocol version 1: request header validation and the gate's verbs (chatai.gate)."""

from ._chatai import gate as _gate

validate = _gate.validate
http_status = _gate.http_status
run = _gate.run

__all__ = ["validate", "http_status", "run"]
