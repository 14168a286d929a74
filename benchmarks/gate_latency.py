"""Added latency of the gate path: ssh client -> sshd -> chatai-gate -> backend, against a direct
HTTP request to the same backend (a small JSON answer, so the figures are the path's cost).

Two ssh variants: a new SSH connection per request (key exchange included), and one channel per
request on a multiplexed connection (ControlMaster), which is how the gateway's tunnel uses its
session pool. Needs root (it runs sshd and creates the login user chatai-test), like the tests.

Usage: sudo .venv/bin/python benchmarks/gate_latency.py [--build build] [--requests 200]
"""

import argparse
import http.client
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from gate_sshd_env import GateEnvironment, request_bytes, unavailable_reason  # noqa: E402

BODY = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def direct(port, key):
    body = json.dumps(BODY).encode()
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json",
                          "Connection": "close"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    return time.perf_counter() - start


def through_ssh(env, extra):
    start = time.perf_counter()
    proc = subprocess.Popen(env.ssh_args(*extra) + ["request"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(request_bytes(BODY))
    proc.stdin.flush()
    out = proc.stdout.read()  # stdin stays open until the response has ended
    elapsed = time.perf_counter() - start
    proc.stdin.close()
    proc.wait()
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    return elapsed


def report(name, samples, base=None):
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    line = f"{name:<34} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   mean {statistics.mean(samples) * 1000:8.2f} ms"
    if base:
        line += f"   added: p50 {p50 - base[0]:7.2f} ms, p99 {p99 - base[1]:7.2f} ms"
    print(line)
    return p50, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    gate_binary = pathlib.Path(args.build) / "bin" / "chatai-gate"
    reason = unavailable_reason(gate_binary)
    if reason:
        sys.exit(f"gate_latency: {reason}")
    env = GateEnvironment(gate_binary)
    try:
        backend = env.add_backend("1001")
        control = env.tmp / "control.sock"
        master = subprocess.Popen(env.ssh_args("-N", "-M", "-S", str(control), "-o", "ControlPersist=no"))
        deadline = time.time() + 10
        while not control.exists() and time.time() < deadline:
            time.sleep(0.05)
        for _ in range(10):  # warm-up: page cache, the backend's threads
            direct(backend.port, backend.key)
            through_ssh(env, ("-S", str(control)))
        direct_samples = [direct(backend.port, backend.key) for _ in range(args.requests)]
        mux_samples = [through_ssh(env, ("-S", str(control))) for _ in range(args.requests)]
        new_samples = [through_ssh(env, ()) for _ in range(max(20, args.requests // 4))]
        master.terminate()
        master.wait()
        print(f"{args.requests} requests each (new connections: {len(new_samples)}), "
              "backend on loopback, small JSON response")
        base = report("direct HTTP", direct_samples)
        report("ssh channel (multiplexed) + gate", mux_samples, base)
        report("ssh new connection + gate", new_samples, base)
    finally:
        env.close()


if __name__ == "__main__":
    main()
