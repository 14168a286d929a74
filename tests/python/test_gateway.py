"""`chatai gateway` end to end with the official openai client: gateway -> local transport -> the
real chatai-gate -> a real `chatai serve` with the real model. Keys from `chatai keys`, limits,
errors, usage per key and user with the request id (of chat, completions and embeddings), the
model list with states, health, metrics, the chat page, a clean stop on SIGTERM, and no prompt or
completion text kept anywhere.
Also chatai.Gateway in-process, with users signed in by a trusted reverse proxy, and a stand-in
backend that misbehaves: HTML answers, negative token counts, a huge event."""

import json
import os
import pathlib
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

import chatai
from gate_backend import PROOF_PATH, key_proof

MODEL = "smol"
MARKER = "ZQX" + secrets.token_hex(6).upper()
STANDIN = "standin-model"
HUGE_EVENT = b"data: " + json.dumps({"choices": [{"delta": {"content": "y" * (3 << 20)}}]}).encode() + b"\n\n"


class StandInHandler(BaseHTTPRequestHandler):
    """A backend that misbehaves as the last message's content says: "html" (an HTML page),
    "negative" (negative token counts, whole or streamed), "huge" (one event of 3 MiB)."""

    protocol_version = "HTTP/1.1"
    key = ""  # the job key whose proof it answers, set per cluster

    def log_message(self, *_):
        pass

    def do_GET(self):
        proof = key_proof(self.key, self.headers.get("X-Chatai-Challenge")) if self.path == PROOF_PATH else None
        if proof:
            self.answer("text/plain", proof.encode())
        else:
            self.answer("application/json", b'{"error":{"message":"not found"}}', 404)

    def answer(self, content_type, body, status=200):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        mode = request["messages"][-1]["content"]
        usage = {"prompt_tokens": -5, "completion_tokens": -7}
        if mode == "html":
            self.answer("text/html", b"<html><body><script>alert(1)</script></body></html>")
        elif mode == "negative" and not request.get("stream"):
            self.answer("application/json", json.dumps({"choices": [{"message": {"content": "x"}}],
                                                        "usage": usage}).encode())
        else:
            events = [HUGE_EVENT] if mode == "huge" else []
            events.append(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
            body = b"".join(events) + b"data: [DONE]\n\n"
            self.answer("text/event-stream", body)


class Cluster:
    """A gate state directory with one real model server and services in other states."""

    def __init__(self, build_dir, test_model):
        self.build_dir = pathlib.Path(build_dir)
        self.chatai = self.build_dir / "bin" / "chatai"
        self.gate = self.build_dir / "bin" / "chatai-gate"
        assert self.chatai.exists() and self.gate.exists(), "build the chatai_cli and chatai_gate_program targets"
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="chatai-gateway-test-"))
        self.state = self.tmp / "state"
        (self.state / "keys").mkdir(parents=True, mode=0o700)
        os.chmod(self.state, 0o700)
        key = secrets.token_hex(24)
        key_file = self.state / "keys" / "job1.key"
        key_file.write_text(key)
        os.chmod(key_file, 0o600)
        self.serve = subprocess.Popen(
            [str(self.chatai), "--log-level", "warn", "serve", "--model", str(test_model), "--port", "0",
             "--served-model-name", MODEL, "--threads", "2", "--ctx", "512", "--api-key-file", str(key_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.serve.stdout.readline()
        assert line, "chatai serve exited"
        port = json.loads(line)["port"]
        self.standin = ThreadingHTTPServer(("127.0.0.1", 0), type("KeyedStandIn", (StandInHandler,), {"key": key}))
        threading.Thread(target=self.standin.serve_forever, daemon=True).start()
        registry = {
            "version": 1, "generation": 1,
            "services": [
                {"id": "chat", "models": [MODEL], "can_scale_from_zero": False},
                {"id": "warming", "models": ["warming-model"], "can_scale_from_zero": False},
                {"id": "down", "models": ["down-model"], "can_scale_from_zero": False},
                {"id": "broken", "models": ["broken-model"], "can_scale_from_zero": False},
                {"id": "standin", "models": [STANDIN], "can_scale_from_zero": False},
            ],
            "backends": [
                {"job": "job1", "service": "chat", "host": "127.0.0.1", "port": port, "state": "ready",
                 "key_file": "job1.key"},
                {"job": "job2", "service": "warming", "host": "127.0.0.1", "port": 9, "state": "starting",
                 "key_file": "job1.key"},
                {"job": "job3", "service": "broken", "host": "127.0.0.1", "port": 9, "state": "ready",
                 "key_file": "job1.key"},
                {"job": "job4", "service": "standin", "host": "127.0.0.1", "port": self.standin.server_address[1],
                 "state": "ready", "key_file": "job1.key"},
            ],
        }
        (self.state / "registry.json").write_text(json.dumps(registry))
        os.chmod(self.state / "registry.json", 0o600)
        self.gate_config = self.tmp / "gate.json"
        self.gate_config.write_text(json.dumps({
            "state_dir": str(self.state),
            "backend": {"connect_timeout_ms": 1000, "first_byte_timeout_ms": 60000, "idle_timeout_ms": 60000},
            "breaker": {"failure_threshold": 1000, "cooldown_ms": 1000},
        }))
        self.db = self.tmp / "gateway.db"

    def gateway_config(self, **override):
        config = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "database": str(self.db),
            "transport": {"kind": "local", "gate_program": str(self.gate), "gate_config": str(self.gate_config),
                          "keep_alive_interval_ms": 200},
            "limits": {"requests_per_minute": 1000, "concurrent_streams": 8},
            "sso": {"header": "X-Remote-User", "trusted_proxies": ["192.0.2.1"]},
            "timeouts": {"status_refresh_ms": 500, "shutdown_grace_ms": 5000},
        }
        config.update(override)
        return config

    def keys(self, *args):
        out = subprocess.run([str(self.chatai), "keys", "--db", str(self.db), *args], capture_output=True, text=True,
                             timeout=30)
        return out

    def create_key(self, user, *extra):
        out = self.keys("create", "--user", user, "--json", *extra)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def gate_usage(self):
        path = self.state / "usage.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self):
        self.standin.shutdown()
        self.standin.server_close()
        if self.serve.poll() is None:
            self.serve.kill()
        self.serve.wait(timeout=30)
        self.serve.stdout.close()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)


class GatewayProcess:
    def __init__(self, cluster, config, name="gateway"):
        self.config_path = cluster.tmp / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.port_file = cluster.tmp / f"{name}.port"
        self.log = cluster.tmp / f"{name}.log"
        self.log_file = open(self.log, "w")
        self.proc = subprocess.Popen(
            [str(cluster.chatai), "--log-level", "debug", "gateway", "--config", str(self.config_path),
             "--port-file", str(self.port_file)],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        line = self.proc.stdout.readline()
        assert line, "chatai gateway exited: " + self.log.read_text()
        event = json.loads(line)
        assert event["event"] == "listening"
        self.url = event["url"]
        self.port = event["port"]
        assert self.url == f"http://127.0.0.1:{self.port}"
        assert self.port_file.read_text().strip() == str(self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log_file.close()
        return code


@pytest.fixture(scope="module")
def cluster(build_dir, test_model):
    c = Cluster(build_dir, test_model)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gateway(cluster):
    g = GatewayProcess(cluster, cluster.gateway_config())
    yield g
    g.stop()


@pytest.fixture(scope="module")
def alice(cluster):
    return cluster.create_key("alice", "--expires", "30d")


def client(gateway, key, **kw):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


def http(gateway, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(gateway.url + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def bearer(key):
    return {"Authorization": "Bearer " + key["key"]}


def expect_error(status_headers_body, status, code):
    got, headers, body = status_headers_body
    assert got == status, body
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert set(error) == {"message", "type", "param", "code"}
    assert headers["X-Request-Id"].startswith("req-")
    return headers, error


def test_keys_from_the_command_line(cluster):
    created = cluster.create_key("carol", "--rpm", "5", "--concurrency", "2", "--expires", "2099-01-01")
    assert created["key"].startswith("sk-chatai-" + created["id"] + "-")
    assert created["expires_at"] == "2099-01-01T00:00:00Z"
    listed = cluster.keys("list", "--json")
    assert listed.returncode == 0
    keys = {k["id"]: k for k in json.loads(listed.stdout)}
    assert keys[created["id"]]["user"] == "carol"
    assert keys[created["id"]]["rpm"] == 5 and keys[created["id"]]["concurrency"] == 2
    assert keys[created["id"]]["state"] == "active"
    secret = created["key"].rsplit("-", 1)[1]
    assert secret not in listed.stdout
    assert secret not in cluster.keys("list").stdout
    assert cluster.keys("revoke", created["id"]).returncode == 0
    assert {k["id"]: k for k in json.loads(cluster.keys("list", "--json").stdout)}[created["id"]]["state"] == "revoked"
    missing = cluster.keys("revoke", "000000000000")
    assert missing.returncode == 2 and "000000000000" in missing.stderr
    bad = cluster.keys("create", "--user", "x", "--expires", "tomorrow")
    assert bad.returncode == 2 and "--expires" in bad.stderr
    usage = cluster.keys("usage", "--json", "--since", "7d")
    assert usage.returncode == 0 and json.loads(usage.stdout)["since"] is not None


def test_non_streamed_chat_is_answered_and_accounted(cluster, gateway, alice):
    raw = client(gateway, alice["key"]).chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=12, temperature=0,
        messages=[{"role": "user", "content": f"Repeat this code exactly: {MARKER}"}])
    request_id = raw.headers["x-request-id"]
    assert re.fullmatch(r"req-[0-9a-f]{24}", request_id)
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    # The id reached the gate's usage record and the gateway's log line.
    records = [r for r in cluster.gate_usage() if r["id"] == request_id]
    assert records and records[0]["user"] == "alice" and records[0]["status"] == 200
    deadline = time.time() + 10
    while request_id not in gateway.log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert request_id in gateway.log.read_text()


def test_an_incoming_request_id_is_not_trusted(gateway, alice):
    status, headers, _ = http(gateway, "GET", "/v1/models", headers={**bearer(alice), "X-Request-Id": "forged"})
    assert status == 200 and headers["X-Request-Id"] != "forged"


def test_streamed_chat_hides_the_usage_chunk_unless_asked(gateway, alice):
    c = client(gateway, alice["key"])
    messages = [{"role": "user", "content": f"Say hello. {MARKER}"}]
    chunks = list(c.chat.completions.create(model=MODEL, max_tokens=8, temperature=0, messages=messages, stream=True))
    assert chunks and all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text
    asked = list(c.chat.completions.create(model=MODEL, max_tokens=8, temperature=0, messages=messages, stream=True,
                                           stream_options={"include_usage": True}))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens > 0


def test_completions(gateway, alice):
    answer = client(gateway, alice["key"]).completions.create(model=MODEL, prompt=f"The code {MARKER} means",
                                                              max_tokens=6, temperature=0)
    assert answer.choices[0].text and answer.usage.completion_tokens > 0
    streamed = list(client(gateway, alice["key"]).completions.create(model=MODEL, prompt="Once upon a time",
                                                                      max_tokens=6, stream=True))
    assert streamed and all(ch.choices for ch in streamed)


def test_embeddings_are_answered_and_accounted(cluster, gateway):
    """Embeddings go through like completions; their usage has no completion tokens, and a batch
    whose answer is longer than 1 MiB is accounted too (its usage comes at the end)."""
    key = cluster.create_key("erin")
    c = client(gateway, key["key"])
    raw = c.embeddings.with_raw_response.create(model=MODEL, input=["Hello there", f"The code {MARKER}"])
    answer = raw.parse()
    assert [d.index for d in answer.data] == [0, 1] and len(answer.data[0].embedding) == 576
    assert answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens
    big = c.embeddings.with_raw_response.create(model=MODEL, input=[f"item {i}" for i in range(256)],
                                                encoding_format="float")
    assert len(big.http_response.content) > 1 << 20
    batch = big.parse()
    assert len(batch.data) == 256
    with pytest.raises(openai.BadRequestError) as refused:
        c.embeddings.create(model=MODEL, input="x", dimensions=8)
    assert refused.value.body["param"] == "dimensions"
    deadline = time.time() + 10
    while time.time() < deadline:
        mine = {r["key"]: r for r in json.loads(cluster.keys("usage", "--json").stdout)["by_key"]}.get(key["id"], {})
        if mine.get("requests") == 3:
            break
        time.sleep(0.1)
    assert mine["requests"] == 3 and mine["user"] == "erin"
    assert mine["prompt_tokens"] == answer.usage.prompt_tokens + batch.usage.prompt_tokens
    assert mine["completion_tokens"] == 0
    records = {r["id"]: r for r in cluster.gate_usage()}
    first = records[raw.headers["x-request-id"]]
    assert first["status"] == 200 and first["prompt_tokens"] == answer.usage.prompt_tokens
    assert first["completion_tokens"] is None
    assert records[big.headers["x-request-id"]]["prompt_tokens"] == batch.usage.prompt_tokens


def test_models_with_their_states(gateway, alice):
    models = client(gateway, alice["key"]).models.list()
    states = {m.id: m.state for m in models.data}
    assert states == {MODEL: "ready", "warming-model": "starting", "down-model": "offline", "broken-model": "ready",
                      STANDIN: "ready"}
    status, _, body = http(gateway, "GET", "/v1/models", headers=bearer(alice))
    doc = json.loads(body)
    assert status == 200 and doc["object"] == "list"
    assert all(m["object"] == "model" and m["owned_by"] for m in doc["data"])


def test_wrong_missing_expired_and_revoked_keys_get_401(cluster, gateway, alice):
    with pytest.raises(openai.AuthenticationError):
        client(gateway, alice["key"][:-1] + ("0" if alice["key"][-1] != "0" else "1")).models.list()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    expect_error(http(gateway, "POST", "/v1/chat/completions", body), 401, "invalid_api_key")
    short = cluster.create_key("dave", "--expires", "1s")
    time.sleep(1.2)
    _, error = expect_error(http(gateway, "POST", "/v1/chat/completions", body, bearer(short)), 401, "api_key_expired")
    assert "expired" in error["message"]
    revoked = cluster.create_key("erin")
    assert http(gateway, "GET", "/v1/models", headers=bearer(revoked))[0] == 200
    assert cluster.keys("revoke", revoked["id"]).returncode == 0
    expect_error(http(gateway, "GET", "/v1/models", headers=bearer(revoked)), 401, "api_key_revoked")
    # The proxy's header from an untrusted address is ignored.
    expect_error(http(gateway, "GET", "/v1/models", headers={"X-Remote-User": "mallory"}), 401, "invalid_api_key")


def test_rate_limit_answers_429_with_retry_after(cluster, gateway):
    key = cluster.create_key("frank", "--rpm", "2")
    for _ in range(2):
        assert http(gateway, "GET", "/v1/models", headers=bearer(key))[0] == 200  # not counted
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for _ in range(2):
        assert http(gateway, "POST", "/v1/chat/completions", body, bearer(key))[0] == 200
    headers, error = expect_error(http(gateway, "POST", "/v1/chat/completions", body, bearer(key)), 429,
                                  "rate_limit_exceeded")
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert error["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):
        client(gateway, key["key"]).chat.completions.create(model=MODEL, messages=body["messages"], max_tokens=1)


def test_unknown_model_bad_request_and_backend_down(gateway, alice):
    def ask(model, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}
        return http(gateway, "POST", "/v1/chat/completions", body, bearer(alice))

    _, error = expect_error(ask("no-such-model"), 404, "model_not_found")
    assert error["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client(gateway, alice["key"]).chat.completions.create(model="no-such-model", messages=[], max_tokens=1)
    expect_error(http(gateway, "POST", "/v1/chat/completions", None, {**bearer(alice), "Content-Type": "application/json"}),
                 400, "invalid_json")
    _, error = expect_error(ask(""), 400, "invalid_value")
    assert error["param"] == "model"
    # The gate's own answers pass unchanged: no ready backend (503 with Retry-After), a backend
    # that fails (502).
    headers, _ = expect_error(ask("down-model"), 503, "no_backend_ready")
    assert int(headers["Retry-After"]) > 0
    expect_error(ask("broken-model"), 502, "backend_failed")


def raw_request(gateway, lines, body=b""):
    """(status, headers, body bytes) of one request written by hand, for what clients won't send."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=120) as s:
        head = "".join(line + "\r\n" for line in [*lines, f"Content-Length: {len(body)}", "Connection: close", ""])
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode().split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in headers.get("transfer-encoding", []):
        decoded = b""
        while payload:
            size, _, payload = payload.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            decoded, payload = decoded + payload[:n], payload[n + 2:]
        payload = decoded
    return int(status_line.split()[1]), headers, payload


def test_api_answers_carry_the_gateways_content_type_and_nosniff(gateway, alice):
    def ask(content, **extra):
        body = {"model": STANDIN, "messages": [{"role": "user", "content": content}], **extra}
        return http(gateway, "POST", "/v1/chat/completions", body, bearer(alice))

    status, headers, body = ask("html")
    assert status == 502 and headers["Content-Type"] == "application/json", body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script>" not in body
    expect_error((status, headers, body), 502, "backend_failed")
    assert json.loads(body)["error"]["message"] == "the cluster's answer was not JSON"
    # A stream the client did not ask for is not passed on as one.
    status, headers, body = ask("stream-unasked")
    assert headers["Content-Type"] == "application/json"
    expect_error((status, headers, body), 502, "backend_failed")
    assert json.loads(body)["error"]["message"] == "the cluster streamed an answer that was asked for whole"
    # The real model server's answers, whole and streamed, and the gateway's own refusals.
    real = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for body, expected in ((real, "application/json"), ({**real, "stream": True}, "text/event-stream")):
        status, headers, _ = http(gateway, "POST", "/v1/chat/completions", body, bearer(alice))
        assert status == 200 and headers["Content-Type"] == expected
        assert headers["X-Content-Type-Options"] == "nosniff"
    for status, headers, _ in (http(gateway, "GET", "/v1/models", headers=bearer(alice)),
                               http(gateway, "GET", "/v1/models"), ask("html", model="no-such-model")):
        assert headers["Content-Type"] == "application/json" and headers["X-Content-Type-Options"] == "nosniff"


def test_negative_token_counts_are_not_accounted(cluster, gateway):
    key = cluster.create_key("olivia")
    ids = []
    for stream in (False, True):
        body = {"model": STANDIN, "messages": [{"role": "user", "content": "negative"}], "stream": stream}
        status, headers, _ = http(gateway, "POST", "/v1/chat/completions", body, bearer(key))
        assert status == 200
        ids.append(headers["X-Request-Id"])
    deadline = time.time() + 10
    while time.time() < deadline:
        mine = {r["key"]: r for r in json.loads(cluster.keys("usage", "--json").stdout)["by_key"]}.get(key["id"])
        if mine and mine["requests"] == 2:
            break
        time.sleep(0.1)
    assert mine["requests"] == 2 and mine["prompt_tokens"] == 0 and mine["completion_tokens"] == 0
    records = [r for r in cluster.gate_usage() if r["id"] in ids]
    assert len(records) == 2
    assert all(r["prompt_tokens"] is None and r["completion_tokens"] is None for r in records)


def test_a_huge_event_reaches_the_client_whole(gateway, alice):
    body = json.dumps({"model": STANDIN, "messages": [{"role": "user", "content": "huge"}], "stream": True}).encode()
    status, headers, payload = raw_request(gateway, ["POST /v1/chat/completions HTTP/1.1", "Host: gateway",
                                                     "Authorization: Bearer " + alice["key"],
                                                     "Content-Type: application/json"], body)
    assert status == 200 and headers["content-type"] == ["text/event-stream"]
    # Passed on whole and in order; the small usage chunk after it is still removed.
    assert payload == HUGE_EVENT + b"data: [DONE]\n\n"


def test_usage_is_recorded_per_key_and_user(cluster, gateway):
    key = cluster.create_key("grace")
    second = cluster.create_key("grace")
    raw = client(gateway, key["key"]).chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=5, temperature=0, messages=[{"role": "user", "content": "Count to three."}])
    answer = raw.parse()
    streamed = list(client(gateway, key["key"]).chat.completions.create(
        model=MODEL, max_tokens=5, temperature=0, messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert streamed
    other = client(gateway, second["key"]).completions.create(model=MODEL, prompt="Hello", max_tokens=3)
    deadline = time.time() + 10
    while time.time() < deadline:
        report = json.loads(cluster.keys("usage", "--json").stdout)
        keys = {r["key"]: r for r in report["by_key"]}
        users = {r["user"]: r for r in report["by_user"]}
        if keys.get(key["id"], {}).get("requests") == 2 and users.get("grace", {}).get("requests") == 3:
            break
        time.sleep(0.1)
    mine = keys[key["id"]]
    assert mine["user"] == "grace" and mine["requests"] == 2
    assert mine["prompt_tokens"] > answer.usage.prompt_tokens
    assert mine["completion_tokens"] >= answer.usage.completion_tokens + 1
    assert keys[second["id"]]["completion_tokens"] == other.usage.completion_tokens
    assert users["grace"]["requests"] == 3
    assert users["grace"]["prompt_tokens"] == mine["prompt_tokens"] + other.usage.prompt_tokens
    assert raw.headers["x-request-id"] in {r["id"] for r in cluster.gate_usage()}


def test_health_metrics_and_the_chat_page(cluster, gateway):
    status, _, body = http(gateway, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["models"] == 5
    assert health["status_age_s"] < 5 and health["tunnel"]["sessions_up"] == 1
    deadline = time.time() + 5
    while not health["tunnel"]["alive"] and time.time() < deadline:
        time.sleep(0.1)
        health = json.loads(http(gateway, "GET", "/health")[2])
    assert health["tunnel"]["alive"]

    limited = cluster.create_key("judy", "--rpm", "1")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert [http(gateway, "POST", "/v1/chat/completions", body, bearer(limited))[0] for _ in range(2)] == [200, 429]
    status, headers, body = http(gateway, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert re.search(r'chatai_gateway_requests_total\{route="/v1/chat/completions",code="200"\} [1-9]', text)
    assert re.search(r'chatai_gateway_requests_total\{route="/v1/chat/completions",code="429"\} [1-9]', text)
    assert re.search(r'chatai_gateway_rate_limit_refusals_total\{limit="requests_per_minute"\} [1-9]', text)
    assert re.search(r'chatai_gateway_tokens_total\{kind="completion"\} [1-9]', text)
    assert "chatai_gateway_streams_in_flight 0" in text
    assert "chatai_gateway_request_duration_seconds_bucket" in text

    status, headers, body = http(gateway, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and body
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    etag = headers["ETag"]
    assert http(gateway, "GET", "/", headers={"If-None-Match": etag})[0] == 304
    assert http(gateway, "GET", "/index.html", headers={"If-None-Match": '"other"'})[0] == 200
    assert http(gateway, "GET", "/no-such-file.js")[0] == 404


def test_stop_on_sigterm_keeps_no_text_anywhere(cluster, gateway, alice):
    c = client(gateway, alice["key"])
    messages = [{"role": "user", "content": f"Repeat this code exactly: {MARKER}"}]
    answers = [c.chat.completions.create(model=MODEL, max_tokens=16, temperature=0, messages=messages)
               .choices[0].message.content]
    answers.append("".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model=MODEL, max_tokens=16, temperature=0, messages=messages, stream=True)))
    answers.append(c.completions.create(model=MODEL, prompt=f"The code {MARKER} means", max_tokens=16,
                                        temperature=0).choices[0].text)
    answers = [a.strip() for a in answers if len(a.strip()) >= 6]
    assert answers, "no answer text to look for"
    assert gateway.stop() == 0
    log = gateway.log.read_text()
    assert "gateway: stopped" in log
    stored = b""
    for path in cluster.tmp.glob("gateway.db*"):
        stored += path.read_bytes()
    assert stored
    for text in [MARKER] + answers:
        assert text.encode() not in stored, f"{text!r} is in the database"
        assert text not in log, f"{text!r} is in the gateway's log"
        assert text not in (cluster.state / "usage.jsonl").read_text()
    # Every forwarded request was accounted before the process ended.
    with sqlite3.connect(cluster.db) as db:
        ids = {row[0] for row in db.execute("SELECT request_id FROM usage")}
    assert {r["id"] for r in cluster.gate_usage()} <= ids


def test_the_gateway_in_process_with_single_sign_on(cluster):
    config = cluster.gateway_config(database=str(cluster.tmp / "inprocess.db"), chat_page=False,
                                    sso={"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]})
    with pytest.raises(chatai.Error) as refused:
        chatai.Gateway(json.dumps({**config, "limits": {"rpm": 1}}))
    assert "limits.rpm" in str(refused.value) and refused.value.code == "invalid_argument"
    path = cluster.tmp / "inprocess.json"
    path.write_text(json.dumps(config))
    for source in (json.dumps(config), str(path)):
        with chatai.Gateway(source) as gw:
            assert gw.port > 0 and gw.url == f"http://127.0.0.1:{gw.port}"

            class Endpoint:
                url = gw.url

            status, _, body = http(Endpoint, "GET", "/v1/models", headers={"X-Remote-User": "sso-user"})
            assert status == 200 and MODEL in body.decode()
            assert http(Endpoint, "GET", "/v1/models")[0] == 401
            assert http(Endpoint, "GET", "/")[0] == 404  # the chat page is off
            answer = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                                   default_headers={"X-Remote-User": "sso-user"}).chat.completions.create(
                model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
            assert answer.usage.completion_tokens > 0
        assert gw.port == 0
    store = subprocess.run([str(cluster.chatai), "keys", "--db", str(cluster.tmp / "inprocess.db"), "usage", "--json"],
                           capture_output=True, text=True)
    users = {r["user"]: r for r in json.loads(store.stdout)["by_user"]}
    assert users["sso-user"]["requests"] == 2


def test_sigterm_lets_a_stream_in_flight_finish_and_accounts_it(cluster):
    db = cluster.tmp / "draining.db"
    # A grace far beyond the stream's length, so that a slow machine does not cut it off.
    gw = GatewayProcess(cluster, cluster.gateway_config(
        database=str(db), timeouts={"status_refresh_ms": 500, "shutdown_grace_ms": 120000}), name="draining")
    try:
        key = json.loads(subprocess.run([str(cluster.chatai), "keys", "--db", str(db), "create", "--user", "heidi",
                                         "--json"], capture_output=True, text=True, check=True).stdout)
        stream = client(gw, key["key"]).completions.with_raw_response.create(
            model=MODEL, prompt="1, 2, 3, 4, 5, 6,", max_tokens=60, temperature=0, stream=True)
        request_id = stream.headers["x-request-id"]
        chunks = []
        for chunk in stream.parse():
            if not chunks:
                gw.proc.send_signal(signal.SIGTERM)
            chunks.append(chunk)
        assert len(chunks) > 5
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        assert gw.stop() == 0
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user, status, completion_tokens FROM usage WHERE request_id = ?",
                            (request_id,)).fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("heidi", 200)
    assert rows[0][2] >= len(chunks) - 1  # the last chunk may carry only the finish reason


def test_a_cluster_that_cannot_be_reached_is_reported(cluster):
    config = cluster.gateway_config(database=str(cluster.tmp / "unreachable.db"),
                                    sso={"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]})
    config["transport"] = {"kind": "local", "gate_program": "/bin/false", "gate_config": str(cluster.gate_config),
                           "keep_alive_interval_ms": 100}
    sso = {"X-Remote-User": "ivan"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with chatai.Gateway(json.dumps(config)) as gw:
        class Endpoint:
            url = gw.url

        status, _, text = http(Endpoint, "GET", "/health")
        health = json.loads(text)
        assert status == 503 and health["status"] == "degraded" and health["status_age_s"] is None
        assert health["status_error"] and not health["tunnel"]["alive"]
        headers, _ = expect_error(http(Endpoint, "GET", "/v1/models", headers=sso), 503, "cluster_unavailable")
        assert int(headers["Retry-After"]) > 0
        expect_error(http(Endpoint, "POST", "/v1/chat/completions", body, sso), 503, "cluster_unavailable")

    # A gate that lists the models but fails every request: the tunnel's failure is mapped.
    gate = cluster.tmp / "failing-gate.sh"
    status_doc = json.dumps({"v": 1, "generation": 1, "services": [
        {"id": "chat", "models": [MODEL], "backends": {"ready": 1, "starting": 0, "draining": 0}}]})
    gate.write_text("#!/bin/sh\n"
                    f"if [ \"$SSH_ORIGINAL_COMMAND\" = status ]; then echo '{status_doc}'; exit 0; fi\n"
                    "echo 'the gate failed' >&2\nexit 1\n")
    os.chmod(gate, 0o755)
    config["transport"]["gate_program"] = str(gate)
    config["database"] = str(cluster.tmp / "failing.db")
    with chatai.Gateway(json.dumps(config)) as gw:
        class Endpoint:
            url = gw.url

        assert http(Endpoint, "GET", "/v1/models", headers=sso)[0] == 200
        headers, _ = expect_error(http(Endpoint, "POST", "/v1/chat/completions", body, sso), 503, "cluster_unavailable")
        assert int(headers["Retry-After"]) > 0


def test_a_repeated_single_sign_on_header_is_refused(cluster):
    # After the SIGTERM test: this gateway's requests reach the gate's usage log, not gateway.db.
    config = cluster.gateway_config(database=str(cluster.tmp / "sso.db"),
                                    sso={"header": "X-Remote-User", "trusted_proxies": ["127.0.0.1"]})
    gw = GatewayProcess(cluster, config, name="sso")
    try:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
        start = ["POST /v1/chat/completions HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
        status, headers, _ = raw_request(gw, [*start, "X-Remote-User: alice"], body)
        assert status == 200
        for second in ("X-Remote-User: mallory", "x-remote-user: alice"):
            status, headers, payload = raw_request(gw, [*start, "X-Remote-User: alice", second], body)
            assert status == 400, payload
            assert headers["content-type"] == ["application/json"]
            assert headers["x-content-type-options"] == ["nosniff"]
            error = json.loads(payload)["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] == "duplicate_header" and error["type"] == "invalid_request_error"
            assert "X-Remote-User" in error["message"]
        status, _, _ = raw_request(gw, ["GET /v1/models HTTP/1.1", "Host: gateway", "X-Remote-User: a",
                                        "X-Remote-User: b", "X-Remote-User: c"])
        assert status == 400
    finally:
        assert gw.stop() == 0
