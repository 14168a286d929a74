"""chatai-gate behind a real OpenSSH sshd on loopback: a request streams from a real backend
through sshd and the gate; shells, PTYs, port and agent forwarding and sftp are refused; a
backend killed mid-stream ends the stream with an error and opens its breaker; no secret
shows in any process's argv; a process squatting on a backend's port, which cannot prove the
job key, gets neither the key nor the prompt; requests beyond a service's cap on requests in
flight get a 503 and count as no demand; the scheduler tick runs with a fixed environment."""

import json
import os
import pathlib
import pwd
import secrets
import select
import socket
import subprocess
import threading
import time

import pytest

from gate_sshd_env import USER, GateEnvironment, dechunk, request_bytes, unavailable_reason


@pytest.fixture(scope="module")
def gate_binary(build_dir):
    binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    reason = unavailable_reason(binary)
    if reason:
        pytest.fail(reason)
    return binary


@pytest.fixture(scope="module")
def env(gate_binary):
    environment = GateEnvironment(gate_binary)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def backend(env):
    return env.add_backend("1001", events=8, gap=0.15)


def read_response(proc, timeout=30.0):
    """Reads the ssh client's stdout to its end, noting when each piece arrived."""
    pieces = []
    deadline = time.time() + timeout
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        pieces.append((time.monotonic(), data))
    return pieces


def start_request(env, body, service="chat", request_id="req-1"):
    proc = subprocess.Popen(env.ssh_args() + ["request"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(request_bytes(body, service=service, request_id=request_id))
    proc.stdin.flush()  # stdin stays open: closing it would tell the gate the client left
    return proc


def roundtrip(env, body, service="chat"):
    """A whole request through ssh; returns the response bytes and the exit status."""
    proc = start_request(env, body, service=service)
    data = b"".join(p for _, p in read_response(proc))
    proc.stdin.close()
    return data, proc.wait(timeout=10)


def test_a_request_streams_through_sshd_and_the_gate(env, backend):
    started = time.monotonic()
    proc = start_request(env, {"model": "smol", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    pieces = read_response(proc)
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    data = b"".join(p for _, p in pieces)
    status, headers, body, complete = dechunk(data)
    assert status == 200 and complete
    assert headers["content-type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:8]] == [f"t{i}" for i in range(8)]
    # The gate asked for usage, so the usage chunk is in the stream (the gateway drops it for
    # clients that did not ask for it).
    assert json.loads(events[-2][6:])["usage"] == {"prompt_tokens": 7, "completion_tokens": 8}
    # Server-sent events keep their timing: the first arrives long before the stream ends.
    first, last = pieces[0][0], pieces[-1][0]
    assert last - first > 0.8
    assert first - started < last - started - 0.8

    record = env.usage()[-1]
    assert record["id"] == "req-1" and record["user"] == "web-user-1" and record["backend"] == "1001"
    assert record["status"] == 200 and record["outcome"] == "ok" and record["stream"] is True
    assert record["prompt_tokens"] == 7 and record["completion_tokens"] == 8
    assert "t0" not in json.dumps(record) and "hi" not in json.dumps(record)


def test_keep_alive_and_status(env, backend):
    result = env.ssh("keep-alive")
    assert result.returncode == 0 and result.stdout == b"OK\n"
    result = env.ssh("status")
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["services"][0]["id"] == "chat"
    assert status["services"][0]["backends"]["ready"] >= 1


@pytest.mark.parametrize("command", [["ls"], ["request", "x"], ["keep-alive;id"], ["/bin/sh"], [""], ["status "]])
def test_unknown_commands_exit_2_with_one_line(env, command):
    result = env.ssh(*command)
    assert result.returncode == 2
    assert result.stdout == b""
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_an_interactive_shell_is_refused(env):
    result = env.ssh(extra=("-T",), input=b"id\nexit\n")
    assert result.returncode == 2
    assert b"uid=" not in result.stdout
    assert b"SSH_ORIGINAL_COMMAND" in result.stderr


def test_a_pty_is_refused(env):
    result = env.ssh("status", extra=("-tt",))
    assert b"PTY allocation request failed" in result.stderr


def test_local_port_forwarding_is_refused(env, backend):
    local = socket.socket()
    local.bind(("127.0.0.1", 0))
    port = local.getsockname()[1]
    local.close()
    proc = subprocess.Popen(env.ssh_args("-N", "-L", f"{port}:127.0.0.1:{backend.port}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        conn = None
        while time.time() < deadline and conn is None:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                time.sleep(0.1)
        assert conn is not None, "ssh did not open the local port"
        conn.settimeout(5)
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        try:
            answer = conn.recv(100)
        except (ConnectionResetError, socket.timeout):
            answer = b""
        conn.close()
        assert answer == b""
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.2)
    assert "refused local port forward" in env.sshd_log.read_text()


def test_remote_port_forwarding_is_refused(env, backend):
    result = env.ssh(extra=("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"0:127.0.0.1:{backend.port}"), timeout=20)
    assert result.returncode != 0
    assert b"forwarding failed" in result.stderr


def test_agent_forwarding_is_refused(env, backend, tmp_path):
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 5
        while not agent_socket.exists() and time.time() < deadline:
            time.sleep(0.05)
        agent_env = {**os.environ, "SSH_AUTH_SOCK": str(agent_socket)}
        proc = subprocess.Popen(["ssh", "-v", "-A"] + env.ssh_args()[1:] + ["request"], env=agent_env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdin.write(request_bytes({"model": "smol", "stream": True}))
        proc.stdin.flush()
        time.sleep(0.5)
        # While the session runs, sshd would have made an agent socket for the user.
        forwarded = [p for p in pathlib.Path("/tmp").glob("ssh-*/agent.*")
                     if p.stat().st_uid == pwd.getpwnam(USER).pw_uid]
        read_response(proc)
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        assert b"Requesting authentication agent forwarding" in proc.stderr.read()
        assert forwarded == []
        assert "agent forwarding disabled" in env.sshd_log.read_text()
    finally:
        agent.kill()
        agent.wait()


def test_sftp_is_refused(env, tmp_path):
    batch = tmp_path / "batch"
    batch.write_text("ls /\n")
    result = subprocess.run(
        ["sftp", "-F", "/dev/null", "-i", str(env.client_key), "-P", str(env.port),
         "-o", f"UserKnownHostsFile={env.known_hosts}", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-b", str(batch), "chatai-test@127.0.0.1"],
        capture_output=True, timeout=30)
    assert result.returncode != 0
    assert b"bin" not in result.stdout


def test_no_secret_in_any_argv_during_a_request(env, backend):
    proc = start_request(env, {"model": "smol", "stream": True})
    seen = []
    deadline = time.time() + 0.8
    while time.time() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(env.gate).encode() in cmdline:
                seen.append(cmdline)
            assert backend.key.encode() not in cmdline
            assert b"Bearer" not in cmdline
        time.sleep(0.05)
    read_response(proc)
    proc.stdin.close()
    proc.wait(timeout=10)
    assert seen, "the gate process was not seen"
    # sshd runs the forced command line with the user's shell (seen as "sh -c <command>", or
    # as "sh -c exec <command>" where the command is run that way); neither that nor the gate
    # carries anything but the fixed command of authorized_keys.
    forced = f"{env.gate} --config {env.config}".encode()
    for cmdline in seen:
        args = cmdline.rstrip(b"\0").split(b"\0")
        assert args == forced.split(b" ") or args[1:] in ([b"-c", forced], [b"-c", b"exec " + forced]), args


def test_a_killed_backend_ends_the_stream_with_an_error_and_opens_the_breaker(env):
    doomed = env.add_backend("2001", service="doomed", events=100, gap=0.1)
    proc = start_request(env, {"model": "smol", "stream": True}, service="doomed", request_id="doomed-1")
    fd = proc.stdout.fileno()
    data = b""
    while b"t2" not in data:
        ready, _, _ = select.select([fd], [], [], 10)
        assert ready, "no stream arrived"
        data += os.read(fd, 65536)
    doomed.kill()
    data += b"".join(p for _, p in read_response(proc, timeout=15))
    proc.stdin.close()
    assert proc.wait(timeout=10) == 1
    status, _, body, complete = dechunk(data)
    assert status == 200
    assert not complete
    assert b'"code":"backend_failed"' in body
    assert env.usage()[-1]["outcome"] == "backend_failed"

    status_doc = json.loads(env.ssh("status").stdout)
    doomed_status = next(s for s in status_doc["services"] if s["id"] == "doomed")
    assert doomed_status["open_breakers"] == 1
    # With its breaker open and no other backend, the next request gets a 503 at once.
    data, code = roundtrip(env, {"model": "smol"}, service="doomed")
    assert code == 0
    assert data.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After:" in data


class Squatter:
    """A plain socket server that a registry names as a ready backend but that does not hold the
    job's key, as a cluster user who bound a dead job's port would be. It answers the first
    request of each connection with `answer` and records every byte it receives."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.received = bytearray()
        self.lock = threading.Lock()
        self.open_connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open_connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        seen = b""
        answered = False
        with conn:
            conn.settimeout(15)
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                with self.lock:
                    self.received += data
                seen += data
                if not answered and b"\r\n\r\n" in seen:
                    answered = True
                    conn.sendall(self.answer)
        with self.lock:
            self.open_connections -= 1

    def wait_idle(self, limit=10):
        deadline = time.time() + limit
        while time.time() < deadline:
            with self.lock:
                if self.open_connections == 0:
                    return
            time.sleep(0.02)

    def close(self):
        self.listener.close()


WRONG_PROOF = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n" + b"0" * 64
NO_PROOF = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"


@pytest.mark.parametrize("answer", [WRONG_PROOF, NO_PROOF], ids=["wrong-proof", "404"])
def test_a_squatter_on_a_backend_port_gets_neither_the_key_nor_the_prompt(env, answer):
    service = "squatted-" + answer.split(b" ")[1].decode()
    job = "3" + answer.split(b" ")[1].decode()
    squatter = Squatter(answer)
    key = env.write_job_key(job)
    env.register(job, service, squatter.port)
    marker = "prompt-marker-" + secrets.token_hex(8)
    try:
        data, code = roundtrip(env, {"model": "smol", "messages": [{"role": "user", "content": marker}]},
                               service=service)
        squatter.wait_idle()
    finally:
        squatter.close()
    assert code == 0
    status, headers, body, complete = dechunk(data)
    assert status == 502 and complete
    assert json.loads(body)["error"]["code"] == "backend_failed"
    received = bytes(squatter.received)
    # It was asked for the proof, with a fresh challenge, and got nothing else.
    assert received.startswith(b"GET /chatai/proof HTTP/1.1\r\n")
    assert b"\r\nX-Chatai-Challenge: " in received
    assert received.count(b" HTTP/1.1\r\n") == 1
    assert key.encode() not in received
    assert marker.encode() not in received
    assert b"authorization" not in received.lower()
    assert b"/v1/" not in received
    status_doc = json.loads(env.ssh("status").stdout)
    assert next(s for s in status_doc["services"] if s["id"] == service)["open_breakers"] == 1
    record = env.usage()[-1]
    assert record["service"] == service and record["outcome"] == "backend_failed" and record["status"] == 502
    assert marker not in json.dumps(record)


def test_after_a_failed_proof_a_genuine_backend_answers(env):
    squatter = Squatter(WRONG_PROOF)
    squatter_key = env.write_job_key("4001")
    env.register("4001", "mixed", squatter.port)  # first in the registry: tried first
    genuine = env.add_backend("4002", service="mixed")
    marker = "prompt-marker-" + secrets.token_hex(8)
    try:
        data, code = roundtrip(env, {"model": "smol", "messages": [{"role": "user", "content": marker}]},
                               service="mixed")
        squatter.wait_idle()
    finally:
        squatter.close()
    assert code == 0
    status, _, body, complete = dechunk(data)
    assert status == 200 and complete
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    received = bytes(squatter.received)
    assert received.startswith(b"GET /chatai/proof ")
    for secret in (squatter_key, genuine.key, marker):
        assert secret.encode() not in received
    assert env.usage()[-1]["backend"] == "4002"


def wait_for_event(proc, limit=15):
    """Reads the stream of `proc` until its first event has arrived."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.time() + limit
    while b"t0" not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        assert ready, "no stream arrived"
        piece = os.read(fd, 65536)
        assert piece, "the stream ended before its first event: " + proc.stderr.read1().decode(errors="replace")
        data += piece


def in_flight(environment, service="chat"):
    status_doc = json.loads(environment.ssh("status").stdout)
    return next(s for s in status_doc["services"] if s["id"] == service)["in_flight"]


def test_requests_beyond_the_cap_get_503_and_are_no_demand(gate_binary):
    environment = GateEnvironment(gate_binary, gate_settings={"limits": {"max_in_flight_per_service": 2}})
    streams = []
    try:
        environment.add_backend("5001", events=400, gap=0.05)
        for i in range(2):
            streams.append(start_request(environment, {"model": "smol", "stream": True}, request_id=f"held-{i}"))
            wait_for_event(streams[-1])
        assert in_flight(environment) == 2

        for _ in range(3):
            data, code = roundtrip(environment, {"model": "smol"})
            assert code == 0
            status, headers, body, _ = dechunk(data)
            assert status == 503
            assert headers["retry-after"] == "15"
            error = json.loads(body)["error"]
            assert error["code"] == "too_many_requests_in_flight" and error["type"] == "server_error"
            # The refused request's marker is gone: demand is still the two streams.
            assert in_flight(environment) == 2
        assert [r["outcome"] for r in environment.usage()[-3:]] == ["busy"] * 3

        # When one stream ends, there is room again.
        streams[0].stdin.close()
        assert streams[0].wait(timeout=10) == 1
        deadline = time.time() + 10
        while in_flight(environment) != 1:
            assert time.time() < deadline, "the ended stream still counts"
            time.sleep(0.05)
        data, code = roundtrip(environment, {"model": "smol"})
        assert code == 0 and dechunk(data)[0] == 200
    finally:
        for proc in streams:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        environment.close()


# Writes what the tick itself was given and what its parent, the gate, was given.
TICK_SCRIPT = """
import json, os, sys
gate = open(f"/proc/{os.getppid()}/environ", "rb").read().split(b"\\0")
with open(sys.argv[1], "w") as out:
    json.dump({"tick": dict(os.environ), "gate": [e.decode(errors="replace") for e in gate if e]}, out)
"""


def test_the_scheduler_tick_runs_with_a_fixed_environment(gate_binary, monkeypatch):
    environment = GateEnvironment(gate_binary, sshd_options=["AcceptEnv CHATAI_TEST_*"])
    user = pwd.getpwnam(USER)  # while it exists: closing may remove the user
    try:
        seen = environment.state / "tick-environment.json"
        config = json.loads(environment.config.read_text())
        config["tick"] = {"interval_s": 1, "command": ["/usr/bin/python3", "-c", TICK_SCRIPT, str(seen)]}
        environment.config.write_text(json.dumps(config))
        monkeypatch.setenv("CHATAI_TEST_FROM_CLIENT", "sent-by-the-ssh-client")
        result = environment.ssh("keep-alive", extra=("-o", "SendEnv=CHATAI_TEST_FROM_CLIENT"))
        assert result.returncode == 0 and result.stdout == b"OK\n"
        doc = json.loads(seen.read_text())
    finally:
        environment.close()
    # The gate had what sshd set and what the client sent ...
    assert "CHATAI_TEST_FROM_CLIENT=sent-by-the-ssh-client" in doc["gate"]
    assert any(e.startswith("SSH_ORIGINAL_COMMAND=") for e in doc["gate"])
    assert any(e.startswith("SSH_CONNECTION=") for e in doc["gate"])
    # ... and the tick got none of it: exactly the fixed set.
    assert doc["tick"] == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user.pw_dir, "USER": USER,
                           "LOGNAME": USER, "LANG": "C.UTF-8"}
