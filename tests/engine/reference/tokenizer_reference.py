#!/usr/bin/env python3
"""Reference tokenization for tests/engine/test_vocabulary.cpp, written apart from chatai's:
the pre-tokenizer regular expressions of the models' Hugging Face tokenizer.json files, run by
the `regex` module, and textbook BPE (merge the best-ranked adjacent pair, the leftmost first,
until none merges) over the merges of a GGUF file.

Writes JSON: {"pre_tokenize": {NAME: [[text, [word, ...]], ...]}, "smollm2": [[text, [id, ...]], ...]}.

Run (needs the regex and gguf packages):
  python3 tests/engine/reference/tokenizer_reference.py SmolLM2-135M-Instruct.Q4_1.gguf \
      > tests/engine/reference/tokenizer_reference.json
"""

import json
import sys

import gguf
import regex

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
          r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def find_all(pattern, text):
    words = regex.findall(pattern, text)
    assert "".join(words) == text, (pattern, text)
    return words


def split_isolated(pattern, pieces):
    """Hugging Face's Split(behavior="isolated"): matches and the text between them."""
    out = []
    for piece in pieces:
        end = 0
        for m in regex.finditer(pattern, piece):
            if m.start() > end:
                out.append(piece[end:m.start()])
            out.append(m.group())
            end = m.end()
        if end < len(piece):
            out.append(piece[end:])
    return out


PRE_TOKENIZERS = {
    "gpt2": lambda text: find_all(GPT2, text),
    "llama3": lambda text: find_all(LLAMA3, text),
    "qwen2": lambda text: find_all(QWEN2, text),
    # Digits(individual_digits=True), then ByteLevel's GPT-2 expression.
    "starcoder": lambda text: [w for piece in split_isolated(r"\p{N}", [text]) for w in find_all(GPT2, piece)],
}

SPLIT_TEXTS = [
    "Hello world",
    "I'm sure you'll LOVE it; we'VE tested what THEY'D say, O'Neil's.",
    "1234567 and 3.14159, x\u00b2 + \uff11\uff12\uff13",
    "line one\nline two\r\n\r\n  indented\t\ttab   \n\n\nend  ",
    "!!!\n\n???  ...\n",
    "\u00c4pfel na\u00efve fa\u00e7ade \u0928\u092e\u0938\u094d\u0924\u0947 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\U0001f999 llamas \U0001f680\U0001f680 \u2705 \U0001f636\u200d\U0001f32b\ufe0f",
    "def f(a, b):\n    return a+b  # sum\n",
    " \u00a0\u3000 wide\u2003spaces ",
    "'tis 'TIS '' 'x",
]

SMOLLM2_TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days.",
    "def add(a, b):\n    return a + b\n",
    "I'm sure you'll LOVE it; we'VE tested it.",
    "\u00dcn\u00efc\u00f6d\u00e9 fa\u00e7ade na\u00efve \u2014 caf\u00e9",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "\U0001f999 llamas & emojis \U0001f680\u2728",
    "    indented\n\n\n  text\t\ttabs   \n",
    "x = 3.14159 * r**2  # area",
    "The quick brown fox jumps over the lazy dog. " * 3,
]


def read_vocabulary(path):
    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    ids = {text: i for i, text in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): rank for rank, m in enumerate(merges)}
    return ids, ranks


def byte_characters():
    """GPT-2's printable stand-in for each byte."""
    own = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in own}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return chars


def bpe(word, ids, ranks, chars):
    symbols = [chars[b] for b in word.encode("utf-8")]
    while True:
        best = None
        for i in range(len(symbols) - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return [ids[s] for s in symbols]


def main():
    ids, ranks = read_vocabulary(sys.argv[1])
    chars = byte_characters()
    result = {
        "pre_tokenize": {name: [[t, split(t)] for t in SPLIT_TEXTS] for name, split in PRE_TOKENIZERS.items()},
        "smollm2": [[t, [i for w in PRE_TOKENIZERS["starcoder"](t) for i in bpe(w, ids, ranks, chars)]]
                    for t in SMOLLM2_TEXTS],
    }
    json.dump(result, sys.stdout, ensure_ascii=True, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
