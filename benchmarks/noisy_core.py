"""The CPU backend beside a noisy neighbour: `chatai bench` prefill and decode tokens/s, once on
a quiet machine and once with a busy loop pinned to the last core that runs half of the time
(--busy-ms on, --idle-ms off), as another job on a shared node or the server's own I/O would.
Several builds can be given to compare them side by side; runs alternate between them round by
round, so a machine's drift hits all alike. Prints one JSON line per run and the medians last.

Usage: .venv/bin/python benchmarks/noisy_core.py [--chatai build/bin/chatai ...] [--model FILE]
       [--rounds 4] [--threads 2] [--prompt 256] [--decode 128] [--busy-ms 2] [--idle-ms 2]
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import statistics
import subprocess
import time

from serve_bench import default_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def busy_loop(core, busy_s, idle_s):
    os.sched_setaffinity(0, {core})
    while True:
        start = time.perf_counter()
        while time.perf_counter() - start < busy_s:
            pass
        time.sleep(idle_s)


def bench(chatai, model, threads, prompt, decode):
    out = subprocess.run([chatai, "bench", "--model", model, "--threads", str(threads), "--prompt-tokens", str(prompt),
                          "--decode-tokens", str(decode), "--batch", "1", "--repeat", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    figures = json.loads(out.splitlines()[-1])
    return figures["prefill_tokens_per_s"], figures["decode_tokens_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chatai", nargs="+", default=[str(ROOT / "build" / "bin" / "chatai")])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--busy-ms", type=float, default=2.0)
    parser.add_argument("--idle-ms", type=float, default=2.0)
    args = parser.parse_args()
    model = args.model or default_model()
    core = max(os.sched_getaffinity(0))

    figures = {(c, noisy): [] for c in args.chatai for noisy in (False, True)}
    for noisy in (False, True):
        neighbour = None
        if noisy:
            neighbour = multiprocessing.Process(target=busy_loop, args=(core, args.busy_ms / 1e3, args.idle_ms / 1e3),
                                                daemon=True)
            neighbour.start()
        try:
            for r in range(args.rounds):
                for chatai in args.chatai:
                    prefill, decode = bench(chatai, model, args.threads, args.prompt, args.decode)
                    figures[(chatai, noisy)].append((prefill, decode))
                    print(json.dumps({"chatai": chatai, "noisy": noisy, "round": r + 1,
                                      "prefill_tokens_per_s": round(prefill, 1),
                                      "decode_tokens_per_s": round(decode, 1)}), flush=True)
        finally:
            if neighbour:
                neighbour.terminate()
                neighbour.join()
    for (chatai, noisy), runs in figures.items():
        print(json.dumps({"chatai": chatai, "noisy": noisy, "busy_core": core if noisy else None,
                          "prefill_median": round(statistics.median(p for p, _ in runs), 1),
                          "decode_median": round(statistics.median(d for _, d in runs), 1)}))


if __name__ == "__main__":
    main()
