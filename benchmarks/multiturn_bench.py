"""Multi-turn chat through `chatai serve`: several conversations at once, each resending its whole
history every turn as chat clients do, starting from a long first message (a document to
discuss, about --first-tokens tokens). Prints, per turn, the prompt size, the time to first
token (median and max over the conversations), the tokens reused from the prefix cache and the
decode speed, for a server with the prefix cache and one without, side by side (the same
machine, the same run).

Usage: .venv/bin/python benchmarks/multiturn_bench.py [--build build] [--model FILE]
       [--conversations 4] [--turns 4] [--first-tokens 1000] [--max-tokens 48] [--threads 0]
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import threading
import time

import openai

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_bench import default_model  # noqa: E402

FACTS = ["The harbour was built in {y} and rebuilt after the storm of {z}.",
         "Ship {i} carried grain, wool and salt between the northern islands.",
         "Its captain kept a log of every tide, wind and star seen on the way.",
         "In the winter of {y} the crew of ship {i} waited six weeks for the ice to break.",
         "Merchants from the south paid in silver coins stamped with a lighthouse."]
QUESTIONS = ["Summarise the document in two sentences.", "Which ship waited for the ice, and when?",
             "What did the merchants pay with?", "Write a short poem about the harbour.",
             "List three things the captain recorded.", "What happened after the storm?"]


def document(index, tokens):
    """About `tokens` tokens of text that differs between conversations from its first words."""
    lines, i = [f"Document {index}: the records of harbour number {index}."], 0
    while sum(len(line.split()) for line in lines) * 1.35 < tokens:
        lines.append(FACTS[i % len(FACTS)].format(i=i + index, y=1700 + 7 * i + index, z=1750 + 3 * i))
        i += 1
    return " ".join(lines)


def turn(client, history, max_tokens):
    start = time.perf_counter()
    first, text, usage = None, "", None
    stream = client.chat.completions.create(model="bench", messages=history, max_tokens=max_tokens, stream=True,
                                            temperature=0, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            text += chunk.choices[0].delta.content
    end = time.perf_counter()
    first = first or end
    decode = (usage.completion_tokens - 1) / (end - first) if usage.completion_tokens > 1 and end > first else 0.0
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return {"ttft": first - start, "prompt": usage.prompt_tokens, "cached": cached, "decode": decode}, text


def conversation(client, index, args, results):
    history = [{"role": "user", "content": document(index, args.first_tokens) + "\n\n" + QUESTIONS[0]}]
    for t in range(args.turns):
        result, text = turn(client, history, args.max_tokens)
        results[t][index] = result
        history += [{"role": "assistant", "content": text},
                    {"role": "user", "content": QUESTIONS[(t + 1) % len(QUESTIONS)]}]


def run(build, model, cache_tokens, args):
    proc = subprocess.Popen(
        [str(pathlib.Path(build) / "bin" / "chatai"), "--log-level", "warn", "serve", "--model", model, "--port", "0",
         "--served-model-name", "bench", "--ctx", "4096", "--parallel", str(args.conversations),
         "--threads", str(args.threads), "--prefix-cache-tokens", str(cache_tokens)],
        stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900)
        turn(client, [{"role": "user", "content": "Hello"}], 2)  # warm-up
        results = [[None] * args.conversations for _ in range(args.turns)]
        threads = [threading.Thread(target=conversation, args=(client, i, args, results))
                   for i in range(args.conversations)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--first-tokens", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    model = args.model or default_model()
    print(f"{args.conversations} conversations at once, {args.turns} turns, first message ~{args.first_tokens} tokens, "
          f"{args.max_tokens} tokens per answer")
    for label, cache_tokens in (("prefix cache", -1), ("no prefix cache", 0)):
        results = run(args.build, model, cache_tokens, args)
        for t, per_conversation in enumerate(results):
            ttfts = [r["ttft"] * 1000 for r in per_conversation]
            print(f"{label:>16}, turn {t + 1}: prompt {statistics.median(r['prompt'] for r in per_conversation):6.0f} "
                  f"tokens, cached {statistics.median(r['cached'] for r in per_conversation):6.0f}; "
                  f"TTFT median {statistics.median(ttfts):7.0f} ms, max {max(ttfts):7.0f} ms; "
                  f"decode {statistics.median(r['decode'] for r in per_conversation):5.1f} tok/s per conversation",
                  flush=True)


if __name__ == "__main__":
    main()
