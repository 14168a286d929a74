"""Cold start of a service scaled to zero on a real single-node Slurm: the seconds from the
first request (the gate answers 503 and flags the service to be started) to the first chat
completion answered by the `chatai serve` job that the scheduler submitted for it.

The job runs the real test model (cmake/test-model.sh). The scheduler ticks every --tick
seconds, so the figure is the cost of sbatch, Slurm's scheduling, the model load, the
readiness probe and one answer, plus up to one tick interval. Needs root (slurmctld, slurmd
and munged run from tests/fixtures/slurm_cluster.sh in a temporary folder).

Usage: sudo .venv/bin/python benchmarks/scheduler_cold_start.py [--build build] [--tick 0.25]
"""

import argparse
import http.client
import io
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))


class raw_socket:
    """The bytes of one HTTP response, for http.client to parse (chunked or not)."""

    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def deployment(state, conf, chatai_bin, model, min_instances=0, idle_before_zero=900):
    template = ("#!/bin/sh\n"
                f"exec {chatai_bin} --log-level warn serve --model {model} --served-model-name smol --threads 1 "
                "--ctx 512 --port 0 --api-key-file {{key_file}} --endpoint-file {{endpoint_file}}\n")
    return {"state_dir": str(state), "job_prefix": "cold-", "slurm": {"conf": conf, "timeout_ms": 5000},
            "services": [{"id": "chat", "models": ["smol"], "min_instances": min_instances, "max_instances": 1,
                          "idle_before_zero": idle_before_zero, "readiness": {"timeout_ms": 1000},
                          "health": {"timeout_ms": 1000}, "time_limit": 600, "template": template}]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=str(ROOT / "build"), help="the CMake build folder")
    p.add_argument("--tick", type=float, default=0.25, help="seconds between scheduler ticks")
    p.add_argument("--limit", type=float, default=120, help="give up after this many seconds")
    args = p.parse_args()

    build = pathlib.Path(args.build).resolve()
    sys.path.insert(0, str(build / "python"))
    import chatai
    from test_gate import header, run_verb

    model = subprocess.run(["bash", str(ROOT / "cmake" / "test-model.sh")], check=True, capture_output=True,
                           text=True).stdout.strip()
    work = pathlib.Path(tempfile.mkdtemp(prefix="chatai-cold-"))
    work.chmod(0o755)  # munged runs as the munge user
    cluster = ROOT / "tests" / "fixtures" / "slurm_cluster.sh"
    try:
        started = subprocess.run(["bash", str(cluster), "start", str(work / "slurm")], capture_output=True, text=True)
        if started.returncode != 0:
            raise SystemExit("slurm_cluster.sh start failed: " + started.stderr)
        conf = started.stdout.strip()
        deploy = work / "deploy.json"
        deploy.write_text(json.dumps(deployment(work / "state", conf, build / "bin" / "chatai", model)))
        gate = work / "gate.json"
        gate.write_text(json.dumps({"state_dir": str(work / "state")}))
        body = json.dumps({"model": "smol", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say hello."}]}).encode()
        request = header(service="chat", headers={}, body_length=len(body)).encode() + b"\n" + body

        scheduler = chatai.Scheduler(str(deploy))
        scheduler.init()
        scheduler.tick()
        assert scheduler.status()["jobs"] == [], "the service should start at zero"

        t0 = time.monotonic()
        _, answer = run_verb(gate, "request", request)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        marks = {}
        while True:
            report = scheduler.tick()
            now = time.monotonic() - t0
            if report["submitted"]:
                marks.setdefault("submitted", now)
            jobs = scheduler.status()["jobs"]
            for job in jobs:
                marks.setdefault(job["phase"], now)
            if any(job["phase"] == "ready" for job in jobs):
                break
            if now > args.limit:
                raise SystemExit(f"no ready backend after {args.limit} s: {jobs}")
            time.sleep(args.tick)
        _, answer = run_verb(gate, "request", request)
        first_answer = time.monotonic() - t0
        response = http.client.HTTPResponse(raw_socket(answer))
        response.begin()
        assert response.status == 200, answer[:300]
        text = json.loads(response.read())["choices"][0]["message"]["content"]
        for phase in ("submitted", "pending", "starting", "ready"):
            if phase in marks:
                print(f"  {phase:<10} {marks[phase]:7.2f} s")
        print(f"  answered   {first_answer:7.2f} s  (HTTP 200: {text!r})")
        print(f"cold start, start request to first answer: {first_answer:.2f} s (ticks every {args.tick} s)")

        deploy.write_text(json.dumps(deployment(work / "state", conf, build / "bin" / "chatai", model,
                                                idle_before_zero=0)))
        stop = chatai.Scheduler(str(deploy))
        end = time.monotonic() + 30
        while stop.status()["jobs"] and time.monotonic() < end:
            stop.tick()
            time.sleep(0.5)
    finally:
        subprocess.run(["bash", str(cluster), "stop", str(work / "slurm")], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
