"""Time to first token of a short chat whose beginning repeats (a system message, one question
and answer, then a new question each time), through `chatai serve` and the official client.
The first request computes everything; the later ones take all they share with it from the
prefix cache, to the token. Each answer is read to its end before the next question.

Usage: .venv/bin/python benchmarks/repeated_prefix_ttft.py [--build build] [--model FILE]
       [--requests 8] [--threads 0]
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_bench import default_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    proc = subprocess.Popen(
        [str(pathlib.Path(args.build) / "bin" / "chatai"), "--log-level", "warn", "serve", "--model",
         args.model or default_model(), "--port", "0", "--served-model-name", "bench", "--ctx", "2048",
         "--threads", str(args.threads)], stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        history = [{"role": "system", "content": "You are a concise assistant for a university computing centre."},
                   {"role": "user", "content": "How do I submit a batch job?"},
                   {"role": "assistant", "content": "Use sbatch with a job script."}]
        rows = []
        for i in range(args.requests):
            messages = history + [{"role": "user", "content": f"And question {i}?"}]
            start = time.perf_counter()
            first, usage = None, None
            for chunk in client.chat.completions.create(model="bench", messages=messages, stream=True, max_tokens=8,
                                                        temperature=0, stream_options={"include_usage": True}):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage:
                    usage = chunk.usage
            rows.append({"request": i + 1, "ttft_ms": round(1000 * first, 1), "prompt_tokens": usage.prompt_tokens,
                         "cached_tokens": usage.prompt_tokens_details.cached_tokens})
            print(json.dumps(rows[-1]), flush=True)
        print(json.dumps({"ttft_median_ms_after_first": round(statistics.median(r["ttft_ms"] for r in rows[1:]), 1)}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
