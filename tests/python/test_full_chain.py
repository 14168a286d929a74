"""The whole service on real parts: the official openai client -> `chatai up --config` (the
gateway of a config file whose transport is SSH) -> the SSH tunnel -> a real OpenSSH sshd with a
`restrict,command=` key -> chatai-gate -> a real Slurm job running `chatai serve` with the real
model. Nothing runs at first: the gate answers 503, the
keep-alive drives the scheduler, which submits the job; the answer then streams back and its
usage is recorded by the gateway (per key and user) and by the gate (under the request id)."""

import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time

import openai
import pytest

from gate_sshd_env import USER, GateEnvironment, unavailable_reason

HERE = pathlib.Path(__file__).resolve().parent
SLURM_CLUSTER = HERE.parent / "fixtures" / "slurm_cluster.sh"
MODEL = "smollm2"


def read_event(proc, timeout=30):
    """The JSON line a program prints once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"exited with {proc.wait()}")
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no listening event")


@pytest.fixture(scope="module")
def slurm():
    folder = pathlib.Path(tempfile.mkdtemp(prefix="chatai-chain-slurm-"))
    os.chmod(folder, 0o755)
    try:
        conf = subprocess.run(["bash", str(SLURM_CLUSTER), "start", str(folder)], check=True, capture_output=True,
                              text=True, timeout=120).stdout.strip()
        os.chmod(conf, 0o644)
        yield conf
    finally:
        subprocess.run(["bash", str(SLURM_CLUSTER), "stop", str(folder)], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def chain(build_dir, test_model, slurm):
    chatai_binary = pathlib.Path(build_dir) / "bin" / "chatai"
    gate_binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    reason = unavailable_reason(gate_binary)
    if reason:
        pytest.fail(reason)
    work = pathlib.Path(tempfile.mkdtemp(prefix="chatai-chain-"))
    os.chmod(work, 0o755)
    deploy = work / "deploy.json"
    env = GateEnvironment(gate_binary, gate_settings={
        "tick": {"interval_s": 1, "timeout_ms": 60000,
                 "command": [str(chatai_binary), "--log-level", "warn", "scheduler", "--config", str(deploy), "tick"]},
        "backend": {"connect_timeout_ms": 1000, "first_byte_timeout_ms": 60000, "idle_timeout_ms": 30000,
                    "retry_after_s": 1},
    })
    # The environment creates the login user when the machine has none.
    user = pwd.getpwnam(USER)
    gateway = None
    try:
        template = ("#!/bin/sh\n"
                    f"exec {chatai_binary} --log-level warn serve --model {test_model} --served-model-name {MODEL} "
                    "--host 127.0.0.1 --port 0 --ctx 1024 --threads 1 "
                    "--api-key-file {{key_file}} --endpoint-file {{endpoint_file}}\n")
        deploy.write_text(json.dumps({
            "state_dir": str(env.state), "job_prefix": "chain-", "slurm": {"conf": slurm},
            "services": [{"id": "smol", "models": [MODEL], "launcher": "slurm", "min_instances": 0,
                          "max_instances": 1, "requests_per_instance": 4, "time_limit": 600, "rotation_lead": 30,
                          "idle_before_zero": 600, "readiness": {"timeout_ms": 1000},
                          "health": {"timeout_ms": 1000}, "template": template}]}))
        os.chmod(deploy, 0o644)
        subprocess.run(["runuser", "-u", USER, "--", str(chatai_binary), "scheduler", "--config", str(deploy),
                        "init"], check=True, timeout=60)

        database = work / "gateway.db"
        gateway_config = work / "gateway.json"
        gateway_config.write_text(json.dumps({
            "listen": {"host": "127.0.0.1", "port": 0},
            "database": str(database),
            "transport": {"kind": "ssh", "host": "127.0.0.1", "port": env.port, "user": USER,
                          "key_file": str(env.client_key), "known_hosts": str(env.known_hosts),
                          "keep_alive_interval_ms": 1000},
        }))
        created = subprocess.run([str(chatai_binary), "keys", "--db", str(database), "create", "--user", "alice",
                                  "--json"], check=True, capture_output=True, text=True, timeout=30)
        key = json.loads(created.stdout)["key"]
        log = open(work / "gateway.log", "w")
        # `chatai up --config`: the gateway of that file against the cluster, with a key of its own.
        gateway = subprocess.Popen([str(chatai_binary), "up", "--config", str(gateway_config)],
                                   stdout=subprocess.PIPE, stderr=log, text=True)
        event = read_event(gateway)
        assert event["api_key"].startswith("sk-chatai-") and event["api_key"] != key
        yield {"url": event["url"], "key": key, "env": env, "work": work, "database": database,
               "binary": chatai_binary, "user": user}
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        env.close()
        shutil.rmtree(work, ignore_errors=True)


def test_a_streamed_answer_comes_back_from_a_slurm_job_started_from_zero(chain):
    client = openai.OpenAI(base_url=chain["url"] + "/v1", api_key=chain["key"], max_retries=0, timeout=60)
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["state"] in ("offline", "starting")

    # The first requests find no backend: the gate answers 503 and the keep-alive's tick submits a job.
    deadline = time.monotonic() + 180
    refusals = 0
    while True:
        try:
            with client.chat.completions.with_streaming_response.create(
                    model=MODEL, stream=True, temperature=0, max_tokens=24,
                    messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]) as response:
                request_id = response.headers["x-request-id"]
                pieces = [chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices]
            break
        except openai.APIStatusError as error:
            assert error.status_code == 503, error
            assert error.response.headers.get("retry-after")
            refusals += 1
            assert time.monotonic() < deadline, "no backend became ready"
            time.sleep(1)
    assert refusals >= 1
    answer = "".join(pieces)
    assert len(pieces) > 1 and "Paris" in answer

    # The job that answered is a real Slurm job of the login user.
    squeue = subprocess.run(["squeue", "-h", "-o", "%u %j %T"], capture_output=True, text=True,
                            env={**os.environ, "SLURM_CONF": json.loads(
                                (chain["work"] / "deploy.json").read_text())["slurm"]["conf"]})
    assert f"{USER} chain-" in squeue.stdout and "RUNNING" in squeue.stdout

    # Usage: in the gateway's database for the key's user, and in the gate's log under the request id.
    deadline = time.monotonic() + 10
    while True:
        usage = json.loads(subprocess.run([str(chain["binary"]), "keys", "--db", str(chain["database"]), "usage",
                                           "--json"], check=True, capture_output=True, text=True).stdout)
        rows = [row for row in usage["by_user"] if row["user"] == "alice"]
        if rows and rows[0]["completion_tokens"] > 0:
            break
        assert time.monotonic() < deadline, usage
        time.sleep(0.2)
    assert rows[0]["prompt_tokens"] > 0 and rows[0]["requests"] >= 1
    records = [r for r in chain["env"].usage() if r.get("id") == request_id]
    assert records and records[0]["completion_tokens"] > 0
