"""chatai-gate behind a real OpenSSH sshd on loopback: a request streams from a real backend
through sshd and the gate; shells, PTYs, port and agent forwarding and sftp are refused; a
backend killed mid-stream ends the stream with an error and opens its breaker; no secret
shows in any process's argv."""

import json
import os
import pathlib
import pwd
import select
import socket
import subprocess
import time

import pytest

from gate_sshd_env import USER, GateEnvironment, dechunk, request_bytes, unavailable_reason


@pytest.fixture(scope="module")
def env(build_dir):
    gate_binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    reason = unavailable_reason(gate_binary)
    if reason:
        pytest.fail(reason)
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
    # sshd runs the forced command line with the user's shell; neither that nor the gate
    # carries anything but the fixed command of authorized_keys.
    forced = f"{env.gate} --config {env.config}".encode()
    for cmdline in seen:
        args = cmdline.rstrip(b"\0").split(b"\0")
        assert args == forced.split(b" ") or args[1:] == [b"-c", forced], args


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
