#!/usr/bin/env python3
"""Independent NumPy reference of the llama-family forward pass, for golden files and perplexity.

Reads the weights with the `gguf` package (dequantized to float32), runs the plain
transformer (RMSNorm, RoPE, grouped-query attention, SwiGLU; qwen2 biases and NEOX rotary,
qwen3 per-head RMSNorm of queries and keys, phi3 fused QKV and gate-up matrices; gemma2 and
gemma3 scaled embeddings, post-attention and post-FFN norms, GeGLU, soft caps, sliding windows
on their layers and gemma3's local rotary base),
and writes golden files of the top logits at every position, or prints a perplexity computed
the way llama.cpp's llama-perplexity does. Model.hidden_states gives the final hidden states
that embeddings pool. Token ids come from `chatai tokenize` so the
reference and the engine see the same input, or for golden files from --ids.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class Model:
    def __init__(self, path: pathlib.Path):
        reader = GGUFReader(str(path))
        self.fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
        arch = self.fields["general.architecture"]
        if arch not in ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"):
            raise SystemExit(f"unsupported architecture {arch}")
        self.arch = arch
        hp = lambda key, default=None: self.fields.get(f"{arch}.{key}", default)  # noqa: E731
        self.n_layer = int(hp("block_count"))
        self.n_embd = int(hp("embedding_length"))
        self.n_head = int(hp("attention.head_count"))
        self.n_head_kv = int(hp("attention.head_count_kv", self.n_head))
        self.head_dim = int(hp("attention.key_length", self.n_embd // self.n_head))
        self.eps = float(hp("attention.layer_norm_rms_epsilon"))
        self.rope_base = float(hp("rope.freq_base", 10000.0))
        self.rope_dim = int(hp("rope.dimension_count", self.head_dim))
        self.gemma = arch in ("gemma2", "gemma3")
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.embed_scale, self.attn_cap, self.final_cap, self.window, self.pattern = 1.0, 0.0, 0.0, 0, 0
        self.local_rope_base = None
        if self.gemma:  # the rules of Gemma's reference implementation
            two = arch == "gemma2"
            self.embed_scale = math.sqrt(self.n_embd)
            self.attn_cap = float(hp("attn_logit_softcapping", 50.0)) if two else 0.0
            self.final_cap = float(hp("final_logit_softcapping", 30.0 if two else 0.0))
            self.window = int(hp("attention.sliding_window", 4096 if two else 0))
            self.pattern = 2 if two else 6
            if not two:
                self.local_rope_base = 10000.0
            if self.n_layer == (46 if two else 62):  # the 27B models
                self.scale = 1.0 / math.sqrt(self.n_embd // self.n_head)
        self.weights = {}
        for t in reader.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
            shape = [int(d) for d in reversed(t.shape)]  # rows first, as NumPy sees them
            self.weights[t.name] = w.reshape(shape)
        if "rope_factors_long.weight" in self.weights:
            raise SystemExit("LongRoPE factors are not supported")
        q_dim, kv_dim = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        for layer in range(self.n_layer):  # phi3's fused matrices, split by rows
            p = f"blk.{layer}."
            qkv = self.weights.pop(p + "attn_qkv.weight", None)
            if qkv is not None:
                self.weights[p + "attn_q.weight"] = qkv[:q_dim]
                self.weights[p + "attn_k.weight"] = qkv[q_dim : q_dim + kv_dim]
                self.weights[p + "attn_v.weight"] = qkv[q_dim + kv_dim :]
            if p + "ffn_gate.weight" not in self.weights:  # gate rows first, then up
                gate_up = self.weights[p + "ffn_up.weight"]
                half = gate_up.shape[0] // 2
                self.weights[p + "ffn_gate.weight"], self.weights[p + "ffn_up.weight"] = gate_up[:half], gate_up[half:]
        self.output = self.weights.get("output.weight", self.weights["token_embd.weight"])

    def w(self, name):
        return self.weights.get(name)

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def windowed(self, layer):
        return self.window > 0 and layer % self.pattern < self.pattern - 1

    def rope(self, x, positions, base):
        # x: [n_tokens, n_heads, head_dim]
        half = self.rope_dim // 2
        inv_freq = base ** (-np.arange(0, half, dtype=np.float64) * 2.0 / self.rope_dim)
        angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [n_tokens, half]
        cos = np.cos(angles)[:, None, :].astype(np.float32)
        sin = np.sin(angles)[:, None, :].astype(np.float32)
        out = x.copy()
        if self.arch != "llama":  # NEOX: pairs are (i, i + half)
            a, b = x[..., :half], x[..., half : 2 * half]
            out[..., :half] = a * cos - b * sin
            out[..., half : 2 * half] = a * sin + b * cos
        else:  # llama: pairs are (2i, 2i + 1)
            a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
            out[..., 0 : 2 * half : 2] = a * cos - b * sin
            out[..., 1 : 2 * half : 2] = a * sin + b * cos
        return out

    def linear(self, x, name):
        y = x @ self.weights[name + ".weight"].T
        bias = self.w(name + ".bias")
        return y + bias if bias is not None else y

    def hidden_states(self, tokens: list[int]) -> np.ndarray:
        """The final hidden states [n_tokens, n_embd] of a causal pass over `tokens` from position 0:
        the last layer's output after the output RMSNorm, before the output projection."""
        n = len(tokens)
        positions = np.arange(n)
        x = self.weights["token_embd.weight"][tokens].astype(np.float32) * np.float32(self.embed_scale)  # [n, n_embd]
        causal = np.triu(np.full((n, n), -np.inf, dtype=np.float32), k=1)
        # A windowed layer's query at position i sees positions i - window + 1 .. i.
        windowed = causal + np.tril(np.full((n, n), -np.inf, dtype=np.float32), k=-self.window) if self.window else causal
        group = self.n_head // self.n_head_kv
        for layer in range(self.n_layer):
            p = f"blk.{layer}."
            local = self.windowed(layer)
            base = self.local_rope_base if local and self.local_rope_base else self.rope_base
            h = self.rms_norm(x, self.weights[p + "attn_norm.weight"])
            q = self.linear(h, p + "attn_q").reshape(n, self.n_head, self.head_dim)
            k = self.linear(h, p + "attn_k").reshape(n, self.n_head_kv, self.head_dim)
            v = self.linear(h, p + "attn_v").reshape(n, self.n_head_kv, self.head_dim)
            if self.w(p + "attn_q_norm.weight") is not None:  # qwen3, gemma3: each head normalized
                q = self.rms_norm(q, self.weights[p + "attn_q_norm.weight"])
                k = self.rms_norm(k, self.weights[p + "attn_k_norm.weight"])
            q, k = self.rope(q, positions, base), self.rope(k, positions, base)
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) * self.scale
            if self.attn_cap:
                scores = self.attn_cap * np.tanh(scores / self.attn_cap)
            scores = scores + (windowed if local else causal)[None]
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", probs, v).reshape(n, self.n_head * self.head_dim)
            out = self.linear(attn, p + "attn_output")
            if self.gemma:
                out = self.rms_norm(out, self.weights[p + "post_attention_norm.weight"])
            x = x + out
            h = self.rms_norm(x, self.weights[p + "ffn_norm.weight"])
            gate = self.linear(h, p + "ffn_gate")
            up = self.linear(h, p + "ffn_up")
            if self.gemma:  # GELU, tanh approximation
                act = 0.5 * gate * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (gate + 0.044715 * gate ** 3)))
            else:
                act = gate / (1.0 + np.exp(-gate))
            out = self.linear(act * up, p + "ffn_down")
            if self.gemma:
                out = self.rms_norm(out, self.weights[p + "post_ffw_norm.weight"])
            x = x + out
        return self.rms_norm(x, self.weights["output_norm.weight"])

    def forward(self, tokens: list[int]) -> np.ndarray:
        """Logits [n_tokens, n_vocab] for a causal pass over `tokens` from position 0."""
        logits = self.hidden_states(tokens) @ self.output.T
        if self.final_cap:
            logits = self.final_cap * np.tanh(logits / self.final_cap)
        return logits


def tokenize(chatai: str, model: pathlib.Path, text: str) -> list[int]:
    out = subprocess.run([chatai, "tokenize", "--model", str(model)], input=text.encode(), check=True,
                         capture_output=True).stdout.decode()
    return [int(t) for t in out.split()]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def perplexity(model: Model, tokens: list[int], n_ctx: int) -> float:
    """llama-perplexity: windows of n_ctx tokens, each scored on its second half."""
    n_chunks = len(tokens) // n_ctx
    if n_chunks == 0:
        raise SystemExit(f"need at least {n_ctx} tokens, have {len(tokens)}")
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx : (c + 1) * n_ctx]
        lp = log_softmax(model.forward(chunk).astype(np.float64))
        for j in range(first, n_ctx - 1):
            nll -= lp[j, chunk[j + 1]]
            count += 1
    return math.exp(nll / count)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, type=pathlib.Path)
    ap.add_argument("--chatai", help="path of the chatai program (for tokenize)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write top logits at every position for fixed texts")
    g.add_argument("--texts", required=True, type=pathlib.Path, help="JSON list of texts")
    g.add_argument("--ids", type=pathlib.Path,
                   help="JSON list of token id lists, one per text, used instead of `chatai tokenize`")
    g.add_argument("--top", type=int, default=10)
    g.add_argument("-o", "--output", required=True, type=pathlib.Path)
    pp = sub.add_parser("perplexity", help="print the perplexity of a text file")
    pp.add_argument("--file", required=True, type=pathlib.Path)
    pp.add_argument("--ctx", type=int, default=128)
    args = ap.parse_args()
    if args.chatai is None and not (args.cmd == "golden" and args.ids):
        ap.error("--chatai is required to tokenize (golden files may give --ids instead)")

    model = Model(args.model)
    if args.cmd == "golden":
        cases = []
        texts = json.loads(args.texts.read_text())
        ids = json.loads(args.ids.read_text()) if args.ids else [None] * len(texts)
        if len(ids) != len(texts):
            raise SystemExit(f"--ids has {len(ids)} lists for {len(texts)} texts")
        for text, given in zip(texts, ids):
            tokens = [int(t) for t in given] if given is not None else tokenize(args.chatai, args.model, text)
            logits = model.forward(tokens)
            top = np.argsort(-logits, axis=-1)[:, : args.top]
            cases.append({
                "text": text,
                "tokens": tokens,
                "top": [[[int(i), round(float(logits[p, i]), 4)] for i in top[p]] for p in range(len(tokens))],
            })
        args.output.write_text(json.dumps({"model": args.model.name, "cases": cases}, indent=1) + "\n")
    else:
        tokens = tokenize(args.chatai, args.model, args.file.read_text())
        print(f"tokens: {len(tokens)}")
        print(f"perplexity: {perplexity(model, tokens, args.ctx):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
