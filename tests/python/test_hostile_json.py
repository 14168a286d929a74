"""Deeply nested JSON, the classic way to overflow a recursive parser's stack, sent to every
component that parses untrusted JSON: the gateway and `chatai serve` (request bodies), the gate
(its request line, the body it reads the model from, the registry) and the gateway's reading of
the gate's status document. Each answers 400 with an OpenAI-style error body, or refuses the
document, and goes on working."""

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
DEPTH = 300_000


def hostile_body() -> bytes:
    """A chat request whose messages hold DEPTH nested arrays."""
    return b'{"model":"' + MODEL.encode() + b'","messages":' + b"[" * DEPTH + b"]" * DEPTH + b"}"


def post(port: int, path: str, body: bytes, key: str = None):
    """A raw HTTP/1.1 POST; returns (status, headers, body) of the answer."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n")
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def assert_nesting_refused(status, body):
    assert status == 400, body[:200]
    err = json.loads(body)["error"]
    assert "nested deeper than 128 levels" in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def up(build_dir, test_model, tmp_path_factory):
    state = tmp_path_factory.mktemp("hostile") / "up"
    proc = subprocess.Popen([str(pathlib.Path(build_dir) / "bin" / "chatai"), "up", "--model", str(test_model),
                             "--port", "0", "--state-dir", str(state), "--ctx", "512", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield proc, json.loads(line)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def ask(url: str, key: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0,
                                                    messages=[{"role": "user", "content": "Hi"}])
            return answer.choices[0].message.content
        except openai.APIStatusError as error:
            assert error.status_code == 503 and time.monotonic() < deadline, error
            time.sleep(0.5)


def test_the_gateway_answers_deep_nesting_with_400_and_keeps_serving(up):
    proc, event = up
    port = int(event["url"].rsplit(":", 1)[1])
    status, headers, body = post(port, "/v1/chat/completions", hostile_body(), event["api_key"])
    assert_nesting_refused(status, body)
    assert headers["content-type"].startswith("application/json")
    assert proc.poll() is None
    assert ask(event["url"], event["api_key"])


def test_chatai_serve_answers_deep_nesting_with_400_and_keeps_serving(build_dir, test_model):
    proc = subprocess.Popen([str(pathlib.Path(build_dir) / "bin" / "chatai"), "--log-level", "warn", "serve",
                             "--model", str(test_model), "--port", "0", "--served-model-name", MODEL,
                             "--threads", "1", "--ctx", "512"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        event = json.loads(proc.stdout.readline())
        for path in ("/v1/chat/completions", "/v1/completions"):
            status, _, body = post(event["port"], path, hostile_body())
            assert_nesting_refused(status, body)
        assert proc.poll() is None
        assert ask(f"http://127.0.0.1:{event['port']}", "unused")
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def gate(build_dir, tmp_path):
    """A gate config over a state folder whose registry knows one service with no backend."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "registry.json").write_text(json.dumps(
        {"version": 1, "generation": 1, "services": [{"id": "chat", "models": [MODEL]}], "backends": []}))
    config = tmp_path / "gate.json"
    config.write_text(json.dumps({"state_dir": str(state)}))
    binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"

    def run(verb: str, data: bytes = b""):
        done = subprocess.run([str(binary), "--config", str(config)], input=data, capture_output=True, timeout=60,
                              env={**os.environ, "SSH_ORIGINAL_COMMAND": verb})
        assert done.returncode >= 0, f"the gate died of signal {-done.returncode}"
        return done

    run.state = state
    return run


def request_line(**fields) -> bytes:
    head = {"v": 1, "id": "r1", "user": "u1", "service": "chat", "method": "POST", "path": "/v1/chat/completions",
            "headers": {}, "body_length": 0, **fields}
    return json.dumps(head).encode()


def test_the_gate_answers_a_deeply_nested_body_with_400(gate):
    body = hostile_body()
    done = gate("request", request_line(body_length=len(body)) + b"\n" + body)
    head, _, answer = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), done.stdout[:300]
    assert_nesting_refused(400, answer)


def test_the_gate_answers_a_deeply_nested_request_line_with_400(gate):
    # Within the 16 KiB bound of the line: 8,000 levels overflow a recursive parser already.
    line = request_line()[:-1] + b',"x":' + b"[" * 8000 + b"]" * 8000 + b"}"
    assert len(line) < 16 * 1024
    done = gate("request", line + b"\n")
    head, _, answer = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), done.stdout[:300]
    assert json.loads(answer)["error"]["message"] == "the header line is nested too deeply"


def test_the_gate_refuses_a_deeply_nested_registry(gate):
    (gate.state / "registry.json").write_bytes(b'{"version":1,"x":' + b"[" * DEPTH + b"]" * DEPTH + b"}")
    done = gate("status")
    assert done.returncode == 1 and done.stdout == b""
    assert b"nested deeper than 128 levels" in done.stderr
    body = b'{"model":"smollm2","messages":[]}'
    done = gate("request", request_line(body_length=len(body)) + b"\n" + body)
    assert done.stdout.startswith(b"HTTP/1.1 503 "), done.stdout[:300]
