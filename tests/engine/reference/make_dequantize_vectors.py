#!/usr/bin/env python3
"""Writes tests/engine/golden/dequantize_vectors.json: random blocks of each weight type and
their values as the gguf package dequantizes them, an independent check of the block layouts.

Run from the repository root with the virtual environment of the project (.venv/bin/python).
"""
import json, numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
rng = np.random.default_rng(7)
def f16(x): return np.array([x], dtype=np.float16).tobytes()
out = {}
def add_blocks(specs):
    for name, (t, size, scale_offsets) in specs.items():
        raw = bytearray(rng.integers(0, 256, size * 3, dtype=np.uint8).tobytes())
        for b in range(3):
            for off in scale_offsets:
                positive = name in ("q4_k", "q5_k", "q2_k")  # scales of unsigned sub-block scales
                raw[b * size + off: b * size + off + 2] = f16(rng.uniform(0.001, 0.05) if positive else rng.uniform(-0.1, 0.1))
        vals = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), t).astype(np.float32).ravel()
        out[name] = {"bytes": bytes(raw).hex(), "values": [float(v) for v in vals]}
add_blocks({  # type: (ggml type, block bytes, [f16 scale offsets])
  "q4_0": (T.Q4_0, 18, [0]), "q4_1": (T.Q4_1, 20, [0, 2]), "q8_0": (T.Q8_0, 34, [0]),
  "q4_k": (T.Q4_K, 144, [0, 2]), "q6_k": (T.Q6_K, 210, [208]),
})
x = rng.normal(0, 3, 64).astype(np.float32)
x[0] = 6.1e-5; x[1] = -3.0e-7; x[2] = 65504.0
h = x.astype(np.float16)
out["f16"] = {"bytes": h.tobytes().hex(), "values": [float(v) for v in h.astype(np.float32)]}
bf = (x.view(np.uint32) >> 16).astype(np.uint16)
out["bf16"] = {"bytes": bf.tobytes().hex(), "values": [float(v) for v in dequantize(bf.view(np.uint8), T.BF16).ravel()]}
# Drawn after the others so that their vectors stay as they were.
add_blocks({
  "q5_0": (T.Q5_0, 22, [0]), "q5_1": (T.Q5_1, 24, [0, 2]), "q2_k": (T.Q2_K, 84, [80, 82]),
  "q3_k": (T.Q3_K, 110, [108]), "q5_k": (T.Q5_K, 176, [0, 2]),
})
json.dump(out, open("tests/engine/golden/dequantize_vectors.json", "w"))
print({k: len(v["values"]) for k, v in out.items()})
