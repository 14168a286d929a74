"""Requests per second and added latency of small requests through the tunnel (libssh pool ->
sshd -> chatai-gate -> a trivial backend), with 1 and 64 clients, in gate protocol version 2
(one long-lived gate per SSH session) and version 1 (a gate that refuses the session command:
one channel, shell and gate per request) side by side, against the same requests through the
`ssh` program with a forced command and a fixed set of control sockets (the way the system it
replaces did it). Added latency is the p50/p99 above a direct HTTP request to the backend.
Then --streams streams at once (default 1,000) through the pool's sessions, each checked intact.
Needs root (it runs sshd and creates the login user chatai-test), like the tests.

Where the time goes: the gate program alone (run as sshd runs it, with SSH_ORIGINAL_COMMAND set,
one after another), and the CPU time per request of each part: the client (libssh, or the ssh
processes), sshd with the shell and the gate it starts per channel (sshd in a cgroup of its own,
its connection processes sampled while they live), and the backend. On a machine with few cores
the sum bounds the request rate. Run it at a high priority (nice -n -15) on a shared machine.

Usage: sudo .venv/bin/python benchmarks/tunnel_latency.py [--build build] [--requests 2000]
       [--backend native|python] [--sessions 8 --channels 10] [--sshd-log-level INFO] [--streams 1000]
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import pwd
import resource
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gate_latency import BODY, direct, percentile, through_ssh  # noqa: E402
from gate_sshd_env import USER, GateEnvironment, request_bytes, unavailable_reason  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_ms(pid):
    """CPU time of a running process in ms, from /proc/PID/stat (utime, stime)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def children_cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


class NativeBackend:
    """benchmarks/http_server_bench (chatai's own HTTP server) answering a small JSON body, and the
    gate's job key proof for the key in `key_file`."""

    def __init__(self, build, key_file):
        self.proc = subprocess.Popen([str(build / "benchmarks" / "http_server_bench"), "--key-file", str(key_file)],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split(":")[1].split()[0])

    def close(self):
        self.proc.terminate()
        self.proc.wait()


class ProcessTree:
    """The CPU time of a process and everything it starts from now on, exited processes included:
    a cgroup (v1 cpuacct or v2) of its own; `path` is None when none can be created here."""

    def __init__(self, pid, name):
        self.path = None
        for root, usage in (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"), ("/sys/fs/cgroup/unified", "cpu.stat"),
                            ("/sys/fs/cgroup", "cpu.stat")):
            path = pathlib.Path(root) / f"chatai-bench-{os.getpid()}-{name}"
            try:
                path.mkdir()
                (path / "cgroup.procs").write_text(str(pid))
                self.path, self.usage = path, usage
                self.ms()
                return
            except OSError:
                self.path = None
                if path.exists():
                    path.rmdir()

    def ms(self):
        text = (self.path / self.usage).read_text()
        if self.usage == "cpuacct.usage":
            return int(text) / 1e6
        return int(text.split("usage_usec ")[1].split()[0]) / 1e3

    def close(self):
        if self.path is None:
            return
        try:
            for pid in (self.path / "cgroup.procs").read_text().split():
                (self.path.parent / "cgroup.procs").write_text(pid)
            self.path.rmdir()
        except OSError:
            pass


class SessionSampler:
    """The CPU time of sshd's own processes per connection ("sshd: user@notty" and its "[priv]"
    monitor), without the shells and gates they start: sampled while they live, since their
    totals are gone once they exit."""

    def __init__(self):
        self.seen = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    if pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().startswith(b"sshd: " + USER.encode()):
                        self.seen[int(entry)] = process_cpu_ms(int(entry))
                except OSError:
                    continue
            self.stop.wait(0.05)

    def total_ms(self):
        self.stop.set()
        self.thread.join()
        return sum(self.seen.values())


class CpuMeter:
    """CPU per request of sshd's tree (sessions, shells, gates), the backend and the client."""

    def __init__(self, sshd_tree, backend_pid):
        self.sshd_tree, self.backend_pid = sshd_tree, backend_pid

    def __enter__(self):
        self.sshd = self.sshd_tree.ms() if self.sshd_tree.path else 0
        self.backend = process_cpu_ms(self.backend_pid)
        self.children = children_cpu_ms()
        self.sessions = SessionSampler()
        return self

    def finish(self, requests, client_ms=None):
        time.sleep(0.2)
        backend = process_cpu_ms(self.backend_pid) - self.backend
        client = client_ms if client_ms is not None else children_cpu_ms() - self.children
        sessions = self.sessions.total_ms()
        line = f"CPU per request: client {client / requests:.2f} ms, backend {backend / requests:.2f} ms"
        if self.sshd_tree.path:
            tree = self.sshd_tree.ms() - self.sshd
            line += (f", sshd+shell+gate {tree / requests:.2f} ms (sshd's connection processes "
                     f"{sessions / requests:.2f}, the processes forked per channel {(tree - sessions) / requests:.2f})")
        return line

    def __exit__(self, *_):
        self.sessions.stop.set()
        return False


def gate_alone(env, backend, runs):
    """The gate program run directly as sshd would run it: wall time and CPU per run."""
    config = str(env.config)
    user = pwd.getpwnam(USER)
    out = []
    for verb, data in (("keep-alive", b""), ("request", request_bytes(BODY))):
        samples = []
        before = children_cpu_ms()
        for _ in range(runs):
            start = time.perf_counter()
            proc = subprocess.Popen([str(env.gate), "--config", config], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env={"SSH_ORIGINAL_COMMAND": verb, "PATH": "/usr/bin:/bin"},
                                    user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            proc.stdin.write(data)
            proc.stdin.flush()
            answer = proc.stdout.read()  # stdin stays open until the answer has ended, as over SSH
            samples.append(time.perf_counter() - start)
            proc.stdin.close()
            assert proc.wait() == 0 and answer, answer
        cpu = (children_cpu_ms() - before) / runs
        out.append(f"gate alone, {verb:<10}: p50 {percentile(samples, 50) * 1000:6.2f} ms, CPU {cpu:.2f} ms per run")
    sh = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", "true"])
        sh.append(time.perf_counter() - start)
    out.append(f"sh -c true (the shell sshd starts per channel): p50 {percentile(sh, 50) * 1000:6.2f} ms")
    return out


def ssh_program(env, controls, clients, requests):
    def one(i):
        return through_ssh(env, ("-S", str(controls[i % len(controls)])))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        samples = list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start), samples


def run_tunnel_bench(build, env, key, service, clients, requests, sessions, channels, stream=False):
    out = subprocess.run(
        [str(build / "benchmarks" / "tunnel_bench"), "127.0.0.1", str(env.port), USER, str(key),
         str(env.known_hosts), service, str(clients), str(requests), str(sessions), str(channels)]
        + (["stream"] if stream else []),
        capture_output=True, text=True)
    if not out.stdout:
        raise RuntimeError(f"tunnel_bench failed: {out.stderr}")
    if out.stderr:
        print(out.stderr.strip(), file=sys.stderr)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(ROOT / "build"))
    parser.add_argument("--gate", help="the chatai-gate binary to measure (default: BUILD/bin/chatai-gate)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ssh-requests", type=int, default=400)
    parser.add_argument("--clients", default="1,64", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--backend", choices=("native", "python"), default="native",
                        help="the trivial backend: chatai's HTTP server (http_server_bench) or gate_backend.py")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--channels", type=int, default=10, help="channels per session (sshd MaxSessions)")
    parser.add_argument("--sshd-log-level", default="INFO")
    parser.add_argument("--gate-runs", type=int, default=200)
    parser.add_argument("--skip-ssh", action="store_true", help="measure the tunnel only")
    parser.add_argument("--skip-v1", action="store_true", help="measure the tunnel in version 2 only")
    parser.add_argument("--streams", type=int, default=1000, help="streams at once in the last check (0: none)")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    build = pathlib.Path(args.build)
    gate = pathlib.Path(args.gate) if args.gate else build / "bin" / "chatai-gate"
    reason = unavailable_reason(gate)
    if reason:
        sys.exit(f"tunnel_latency: {reason}")
    env = GateEnvironment(gate, breaker_threshold=1000, log_level=args.sshd_log_level,
                          sshd_options=[f"MaxSessions {args.channels}", "MaxStartups 100"],
                          gate_settings={"limits": {"max_in_flight_per_service": max(128, 2 * args.streams)},
                                         # 1,000 streams connect to one backend at once
                                         "backend": {"connect_timeout_ms": 10000, "first_byte_timeout_ms": 30000,
                                                     "idle_timeout_ms": 10000}})
    masters = []
    native = None
    sshd_tree = ProcessTree(env.sshd.pid, "sshd")
    try:
        backend = env.add_backend("1001")
        # The backend logs a line per request on a pipe: drain it, or it stalls after a few thousand.
        threading.Thread(target=backend.proc.stderr.read, daemon=True).start()
        if args.backend == "native":
            native = NativeBackend(build, env.state / "keys" / "1001.key")
            env.registry["backends"][0]["port"] = native.port
            env.publish()
            backend.port, backend_pid = native.port, native.proc.pid
        else:
            backend_pid = backend.proc.pid
        print(f"backend: {args.backend}; pool: {args.sessions} sessions x {args.channels} channels; "
              f"sshd LogLevel {args.sshd_log_level}; {os.cpu_count()} CPUs")
        for _ in range(20):
            direct(backend.port, backend.key)
        base_samples = [direct(backend.port, backend.key) for _ in range(200)]
        base = percentile(base_samples, 50) * 1000, percentile(base_samples, 99) * 1000
        print(f"direct HTTP to the backend: p50 {base[0]:.2f} ms, p99 {base[1]:.2f} ms")
        for line in gate_alone(env, backend, args.gate_runs):
            print(line)

        keys = [("v2", env.client_key)] + ([] if args.skip_v1 else [("v1", env.add_v1_only_key())])
        for clients in client_counts:
            for version, key in keys:
                requests = args.requests if clients > 1 else max(200, args.requests // 5)
                with CpuMeter(sshd_tree, backend_pid) as meter:
                    r = run_tunnel_bench(build, env, key, "chat", clients, requests, args.sessions, args.channels)
                    cpu = meter.finish(requests, r["cpu_ms"])
                print(f"tunnel {version}, {clients:2d} clients: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms "
                      f"(added {r['p50_ms'] - base[0]:6.2f})  p99 {r['p99_ms']:7.2f} ms "
                      f"(added {r['p99_ms'] - base[1]:6.2f})  failed {r['failed']}; {cpu}")

        if args.streams:
            streamer = env.add_backend("2001", service="streams", events=10, gap=0.1)
            threading.Thread(target=streamer.proc.stderr.read, daemon=True).start()
            r = run_tunnel_bench(build, env, env.client_key, "streams", args.streams, args.streams, args.sessions,
                                 args.channels, stream=True)
            print(f"tunnel v2, {args.streams} streams at once through {args.sessions} sessions: "
                  f"{args.streams - r['failed']} intact, {r['failed']} failed; p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms for 10 events 0.1 s apart")

        if args.skip_ssh:
            return
        # As many master connections as the tunnel has sessions, so both sides have the same channels.
        controls = [env.tmp / f"control-{i}.sock" for i in range(args.sessions)]
        for c in controls:
            masters.append(subprocess.Popen(env.ssh_args("-N", "-M", "-S", str(c), "-o", "ControlPersist=no")))
        deadline = time.time() + 10
        while not all(c.exists() for c in controls) and time.time() < deadline:
            time.sleep(0.05)
        for clients in client_counts:
            requests = args.ssh_requests if clients > 1 else max(100, args.ssh_requests // 4)
            with CpuMeter(sshd_tree, backend_pid) as meter:
                rps, samples = ssh_program(env, controls, clients, requests)
                cpu = meter.finish(requests)
            p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
            print(f"ssh program, {clients:2d} clients: {rps:8.1f} req/s  p50 {p50:7.2f} ms "
                  f"(added {p50 - base[0]:6.2f})  p99 {p99:7.2f} ms (added {p99 - base[1]:6.2f}); {cpu}")
    finally:
        sshd_tree.close()
        for m in masters:
            m.terminate()
            m.wait()
        if native:
            native.close()
        env.close()


if __name__ == "__main__":
    main()
