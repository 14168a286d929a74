"""Requests per second and added latency of small requests through the tunnel (libssh pool ->
sshd -> chatai-gate -> a trivial backend), with 1 and 64 clients, against the same requests
through the `ssh` program with a forced command and a fixed set of control sockets (the way the
system it replaces did it). Added latency is the p50/p99 above a direct HTTP request to the
backend. Needs root (it runs sshd and creates the login user chatai-test), like the tests.

Usage: sudo .venv/bin/python benchmarks/tunnel_latency.py [--build build] [--requests 2000]
"""

import argparse
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gate_latency import direct, percentile, through_ssh  # noqa: E402
from gate_sshd_env import USER, GateEnvironment, unavailable_reason  # noqa: E402

CONTROL_SOCKETS = 4


def ssh_program(env, controls, clients, requests):
    def one(i):
        return through_ssh(env, ("-S", str(controls[i % len(controls)])))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        samples = list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start), samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ssh-requests", type=int, default=400)
    parser.add_argument("--clients", default="1,64", help="comma-separated numbers of concurrent clients")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    build = pathlib.Path(args.build)
    reason = unavailable_reason(build / "bin" / "chatai-gate")
    if reason:
        sys.exit(f"tunnel_latency: {reason}")
    env = GateEnvironment(build / "bin" / "chatai-gate", breaker_threshold=1000,
                          sshd_options=["MaxSessions 64", "MaxStartups 100"])
    masters = []
    try:
        backend = env.add_backend("1001")
        # The backend logs a line per request on a pipe: drain it, or it stalls after a few thousand.
        threading.Thread(target=backend.proc.stderr.read, daemon=True).start()
        for _ in range(20):
            direct(backend.port, backend.key)
        base_samples = [direct(backend.port, backend.key) for _ in range(200)]
        base = percentile(base_samples, 50) * 1000, percentile(base_samples, 99) * 1000
        print(f"direct HTTP to the backend: p50 {base[0]:.2f} ms, p99 {base[1]:.2f} ms")

        for clients in client_counts:
            requests = args.requests if clients > 1 else max(200, args.requests // 5)
            out = subprocess.run(
                [str(build / "benchmarks" / "tunnel_bench"), "127.0.0.1", str(env.port), USER, str(env.client_key),
                 str(env.known_hosts), "chat", str(clients), str(requests), "4", "32"],
                capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            print(f"tunnel, {clients:2d} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms "
                  f"(added {r['p50_ms'] - base[0]:6.2f})  p99 {r['p99_ms']:7.2f} ms (added {r['p99_ms'] - base[1]:6.2f})"
                  f"  failed {r['failed']}")

        controls = [env.tmp / f"control-{i}.sock" for i in range(CONTROL_SOCKETS)]
        for c in controls:
            masters.append(subprocess.Popen(env.ssh_args("-N", "-M", "-S", str(c), "-o", "ControlPersist=no")))
        deadline = time.time() + 10
        while not all(c.exists() for c in controls) and time.time() < deadline:
            time.sleep(0.05)
        for clients in client_counts:
            requests = args.ssh_requests if clients > 1 else max(100, args.ssh_requests // 4)
            rps, samples = ssh_program(env, controls, clients, requests)
            p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
            print(f"ssh program, {clients:2d} clients: {rps:8.1f} req/s  p50 {p50:7.2f} ms (added {p50 - base[0]:6.2f})"
                  f"  p99 {p99:7.2f} ms (added {p99 - base[1]:6.2f})")
    finally:
        for m in masters:
            m.terminate()
            m.wait()
        env.close()


if __name__ == "__main__":
    main()
