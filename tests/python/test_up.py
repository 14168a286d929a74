"""`chatai up`, the embedded default: the gateway, the local transport with chatai-gate, the
local launcher with `chatai serve` and the real model. The official openai client streams a chat
completion with the key `chatai up` printed; Ctrl-C stops everything, the model server included."""

import json
import os
import pathlib
import signal
import subprocess
import time

import openai
import pytest

MODEL = "smollm2"


def children_running(state_dir: pathlib.Path):
    """`chatai serve` processes started for this state folder."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and any(str(state_dir).encode() in a for a in argv):
                found.append(int(entry))
    return found


@pytest.fixture
def service(build_dir, test_model, tmp_path):
    state = tmp_path / "up"
    proc = subprocess.Popen([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                             "--port", "0", "--state-dir", str(state), "--ctx", "1024", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        event = json.loads(line)
        yield proc, event, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def ask(client, **extra):
    """A streamed chat completion, retried while the model server starts (503)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            stream = client.chat.completions.create(
                model=MODEL, stream=True, temperature=0, max_tokens=16,
                messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                **extra)
            return list(stream)
        except openai.APIStatusError as error:
            assert error.status_code == 503 and time.monotonic() < deadline, error
            time.sleep(0.5)


def test_up_serves_a_streamed_chat_completion_and_stops_on_ctrl_c(service):
    proc, event, state = service
    assert event["url"].startswith("http://127.0.0.1:")
    key = event["api_key"]
    client = openai.OpenAI(base_url=event["url"] + "/v1", api_key=key, max_retries=0, timeout=60)

    chunks = ask(client)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    # The model list is the cluster's status, renewed every few seconds.
    deadline = time.monotonic() + 15
    while True:
        models = [(m.id, m.model_extra["state"]) for m in client.models.list().data]
        if models == [(MODEL, "ready")]:
            break
        assert models == [(MODEL, "starting")] and time.monotonic() < deadline, models
        time.sleep(0.5)

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=event["url"] + "/v1", api_key=key + "x", max_retries=0).models.list()

    assert children_running(state), "the model server runs as a local job"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 15
    while children_running(state):
        assert time.monotonic() < deadline, "the model server outlived chatai up"
        time.sleep(0.2)


def test_a_second_run_revokes_the_key_of_the_first(build_dir, test_model, tmp_path):
    keys = []
    for _ in range(2):
        proc = subprocess.Popen([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                                 "--port", "0", "--state-dir", str(tmp_path / "up"), "--ctx", "256"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            event = json.loads(proc.stdout.readline())
            keys.append(event["api_key"])
            client = openai.OpenAI(base_url=event["url"] + "/v1", api_key=keys[-1], max_retries=0)
            assert client.models.list().data
            if len(keys) == 2:
                with pytest.raises(openai.AuthenticationError):
                    openai.OpenAI(base_url=event["url"] + "/v1", api_key=keys[0], max_retries=0).models.list()
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
    assert keys[0] != keys[1]
