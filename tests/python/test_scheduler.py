"""chatai.Scheduler from Python: the local launcher runs the stand-in job server
(tests/fixtures/scheduler_backend.py); a request through the gate starts a service from zero,
ticks bring a ready backend, and a bad deployment file is refused with the field named."""

import json
import pathlib
import sys
import time

import pytest

import chatai
from test_gate import header, run_verb

BACKEND = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "scheduler_backend.py"


def write_deployment(tmp_path, **fields):
    service = {"id": "echo", "models": ["m"], "launcher": "local", "requests_per_instance": 2, "time_limit": 600,
               "rotation_lead": 30, "readiness": {"timeout_ms": 500}, "health": {"timeout_ms": 500},
               "template": f"#!/bin/sh\nexec {sys.executable} {BACKEND} --key-file {{{{key_file}}}} "
                           "--endpoint-file {{endpoint_file}}\n"}
    service.update(fields)
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps({"state_dir": "state", "job_prefix": "py-", "services": [service]}))
    return path


def tick_until(scheduler, predicate, limit):
    end = time.monotonic() + limit
    while True:
        scheduler.tick()
        status = scheduler.status()
        if predicate(status):
            return status
        assert time.monotonic() < end, f"not reached within {limit} s: {status}"
        time.sleep(0.3)


def ask_gate(gate_config):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    code, out = run_verb(gate_config, "request",
                         header(service="echo", headers={}, body_length=len(body)).encode() + b"\n" + body)
    assert code == 0
    return out


def test_a_request_starts_a_service_from_zero(tmp_path):
    scheduler = chatai.Scheduler(str(write_deployment(tmp_path, min_instances=0, max_instances=1)))
    scheduler.init()
    report = scheduler.tick()
    assert report["submitted"] == 0 and report["unknown_listings"] == []
    status = scheduler.status()
    assert status["jobs"] == [] and status["services"][0]["target"] == 0 and status["last_tick_ms"] > 0

    gate_config = tmp_path / "gate.json"
    gate_config.write_text(json.dumps({"state_dir": str(tmp_path / "state")}))
    assert ask_gate(gate_config).startswith(b"HTTP/1.1 503 ")  # nothing runs yet; the start is requested

    try:
        assert scheduler.tick()["submitted"] == 1
        status = tick_until(scheduler, lambda s: any(j["phase"] == "ready" for j in s["jobs"]), 30)
        job = status["jobs"][0]
        assert job["launcher"] == "local" and job["host"] == "127.0.0.1" and job["port"] > 0
        assert status["services"][0]["ready"] == 1
        answer = ask_gate(gate_config)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"hello from" in answer
    finally:
        stop = chatai.Scheduler(str(write_deployment(tmp_path, min_instances=0, max_instances=1,
                                                     idle_before_zero=0)))
        tick_until(stop, lambda s: s["jobs"] == [], 30)


def test_min_instances_keeps_a_backend_ready(tmp_path):
    scheduler = chatai.Scheduler(str(write_deployment(tmp_path, min_instances=1, max_instances=1)))
    scheduler.init()
    try:
        status = tick_until(scheduler, lambda s: s["services"][0]["ready"] == 1, 30)
        assert [j["phase"] for j in status["jobs"]] == ["ready"]
    finally:
        stop = chatai.Scheduler(str(write_deployment(tmp_path, min_instances=0, max_instances=1,
                                                     idle_before_zero=0)))
        tick_until(stop, lambda s: s["jobs"] == [], 30)


def test_a_bad_deployment_names_the_field(tmp_path):
    with pytest.raises(chatai.Error) as info:
        chatai.Scheduler(str(write_deployment(tmp_path, min_instances=2, max_instances=1)))
    assert info.value.code == "invalid_argument"
    assert "deploy.json" in str(info.value) and "max_instances" in str(info.value)
    with pytest.raises(chatai.Error) as info:
        chatai.Scheduler(str(tmp_path / "missing.json"))
    assert info.value.code == "not_found"
