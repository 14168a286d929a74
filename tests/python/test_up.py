"""`chatai up`, the embedded default: the gateway, the local transport with chatai-gate, the
local launcher with `chatai serve` and the real model. The official openai client streams a chat
completion with the key `chatai up` printed; Ctrl-C stops everything, the model server included."""

import json
import os
import pathlib
import signal
import socket
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


def test_a_second_run_on_the_same_state_folder_is_refused_and_changes_nothing(service, build_dir, test_model):
    proc, event, state = service
    key = event["api_key"]
    client = openai.OpenAI(base_url=event["url"] + "/v1", api_key=key, max_retries=0, timeout=60)
    assert ask(client)
    servers = children_running(state)
    assert len(servers) == 1
    files = {p: p.read_bytes() for p in (state / "deploy.json", state / "gate.json")}

    second = subprocess.run([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                             "--port", "0", "--state-dir", str(state), "--ctx", "256", "--threads", "1"],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert second.stdout == ""
    assert f"another chatai up (pid {proc.pid}) is running with the state folder {state}" in second.stderr

    # The first run keeps its key, its model server and its files.
    assert proc.poll() is None
    assert children_running(state) == servers
    assert {p: p.read_bytes() for p in files} == files
    assert client.models.list().data
    assert ask(client)


def test_a_port_in_use_is_refused_before_anything_starts(build_dir, test_model, tmp_path):
    state = tmp_path / "up"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                              "--port", str(port), "--state-dir", str(state), "--ctx", "256", "--threads", "1"],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stdout == ""
    assert "address already in use" in run.stderr.lower(), run.stderr
    assert not children_running(state), "no model server was started"
    assert not (state / "state" / "local").exists() or not any((state / "state" / "local").iterdir())


def listening_inode(port: int) -> str:
    """The socket inode of the TCP listener on 127.0.0.1:port, from /proc/net/tcp."""
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return inode
    raise AssertionError(f"nothing listens on port {port}")


def test_children_do_not_hold_the_gateways_listening_socket(service):
    proc, event, state = service
    client = openai.OpenAI(base_url=event["url"] + "/v1", api_key=event["api_key"], max_retries=0, timeout=60)
    assert ask(client)
    inode = listening_inode(int(event["url"].rsplit(":", 1)[1]))
    servers = children_running(state)
    assert servers
    for pid in servers:
        held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert f"socket:[{inode}]" not in held, f"the model server {pid} holds the gateway's port"
        # stdin is /dev/null and stdout/stderr the job's log; everything else is the server's own.
        assert not any(link.endswith("up.lock") or link.endswith("gateway.db") for link in held), held


@pytest.mark.parametrize("problem", ["group-writable", "symlinked subfolder"])
def test_a_misconfigured_state_folder_is_a_clear_error(build_dir, test_model, tmp_path, problem):
    state = tmp_path / "up"
    state.mkdir(mode=0o700)
    if problem == "group-writable":
        os.chmod(state, 0o775)
        expected = f"{state}: is writable by group or others (mode 0775)"
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        (state / "state").symlink_to(elsewhere)
        expected = f"{state / 'state'}: is a symbolic link"
    run = subprocess.run([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                          "--port", "0", "--state-dir", str(state), "--ctx", "256"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stdout == ""
    assert expected in run.stderr, run.stderr
    assert not children_running(state)
    if problem == "symlinked subfolder":
        assert not any(elsewhere.iterdir()), "nothing was written through the link"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}


def test_tool_calls_and_structured_output_pass_the_gateway_and_gate_and_are_accounted(service, build_dir):
    proc, event, state = service
    client = openai.OpenAI(base_url=event["url"] + "/v1", api_key=event["api_key"], max_retries=0, timeout=120)
    ask(client)  # waits for the model server
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL, messages=asked, tools=[WEATHER], tool_choice="required",
                                       max_tokens=100, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}
    streamed = list(client.chat.completions.create(model=MODEL, messages=asked, tools=[WEATHER], tool_choice="required",
                                                   max_tokens=100, temperature=0, stream=True,
                                                   stream_options={"include_usage": True}))
    arguments = {}
    for c in streamed:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            arguments[tc.index] = arguments.get(tc.index, "") + (tc.function.arguments or "")
    assert [json.loads(arguments[i]) for i in sorted(arguments)] == \
        [json.loads(c.function.arguments) for c in r.choices[0].message.tool_calls]
    assert [c.choices[0].finish_reason for c in streamed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    answer = client.chat.completions.create(
        model=MODEL, max_tokens=100, temperature=0,
        messages=[{"role": "user", "content": 'What is the capital of France? Answer with a JSON object like {"capital": "..."}.'}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": {
            "type": "object", "properties": {"capital": {"type": "string", "maxLength": 20}}, "required": ["capital"],
            "additionalProperties": False}}})
    assert set(json.loads(answer.choices[0].message.content)) == {"capital"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=asked, max_tokens=4, extra_body={"frobnicate": 1})
    assert refused.value.body["param"] == "frobnicate"

    # The gateway recorded the tokens of the three answers (and of the first ask) for this key.
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run([str(pathlib.Path(build_dir) / "bin" / "chatai"), "keys", "--db", str(state / "gateway.db"),
                              "usage", "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        totals = json.loads(out.stdout)["by_key"]
        prompt = sum(t["prompt_tokens"] for t in totals)
        completion = sum(t["completion_tokens"] for t in totals)
        expected_prompt = r.usage.prompt_tokens + streamed[-1].usage.prompt_tokens + answer.usage.prompt_tokens
        if prompt >= expected_prompt and completion >= r.usage.completion_tokens + answer.usage.completion_tokens:
            break
        assert time.monotonic() < deadline, (totals, expected_prompt)
        time.sleep(0.5)
