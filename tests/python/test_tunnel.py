"""chatai.Tunnel through a real OpenSSH sshd on loopback (a restrict,command= key running the real
chatai-gate) and through the local transport: streams arrive intact, 200 at once over the pool;
the tunnel recovers from sshd being killed and restarted; a wrong host key or client key is
refused without leaking a connection; requests share one gate per SSH session (protocol
version 2), which rotates without losing one, and a gate of version 1 still gets one channel per
request; a cancelled request is closed at the gate at once."""

import json
import os
import pathlib
import shutil
import subprocess
import threading
import time

import chatai
import pytest

from gate_sshd_env import USER, GateEnvironment, dechunk, unavailable_reason


STREAM_BODY = json.dumps({"model": "smol", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def env(build_dir):
    gate_binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    reason = unavailable_reason(gate_binary)
    if reason:
        pytest.fail(reason)
    # 200 streams of one service at once: above the gate's default cap on requests in flight.
    environment = GateEnvironment(gate_binary, breaker_threshold=1000, sshd_options=["MaxSessions 32", "MaxStartups 100"],
                                  gate_settings={"limits": {"max_in_flight_per_service": 256}})
    environment.add_backend("1001", service="chat", events=5, gap=0.01)
    environment.add_backend("2001", service="slow", events=200, gap=0.05)
    yield environment
    environment.close()


def tunnel(env, key=None, known_hosts=None, **options):
    options.setdefault("keep_alive_interval", 0)
    return chatai.Tunnel("127.0.0.1", USER, str(key or env.client_key), str(known_hosts or env.known_hosts),
                         port=env.port, **options)


def expect_stream(data: bytes, events=5):
    status, headers, body, complete = dechunk(data)
    assert status == 200 and complete, data[:200]
    assert headers["content-type"].startswith("text/event-stream")
    parts = [e for e in body.decode().split("\n\n") if e]
    assert parts[-1] == "data: [DONE]"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in parts[:events]] == [f"t{i}" for i in range(events)]


def client_connections(port):
    """Established TCP connections to `port` on loopback (seen from the client side)."""
    count = 0
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
            count += 1
    return count


def gate_processes(env):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(str(env.gate).encode() + b"\0"):
                found.append(int(pid))
    return found


def test_a_request_streams_through_the_tunnel(env):
    with tunnel(env) as t:
        t.wait_connected(10)
        data = b"".join(t.request("chat", STREAM_BODY, id="tunnel-1", user="web-user-1"))
        expect_stream(data)
        assert env.usage()[-1]["id"] == "tunnel-1"


def test_status_and_keep_alive(env):
    with tunnel(env, keep_alive_interval=0.2) as t:
        status = t.status()
        assert {s["id"] for s in status["services"]} == {"chat", "slow"}
        t.keep_alive()
        deadline = time.time() + 5
        while not t.health()["alive"] and time.time() < deadline:
            time.sleep(0.05)
        health = t.health()
        assert health["alive"] and health["since_keep_alive"] < 1.0 and health["sessions_up"] >= 1


def test_200_concurrent_streams_all_complete(env):
    with tunnel(env, sessions=8, channels_per_session=25) as t:
        t.wait_connected(10)
        streams = [t.request("chat", STREAM_BODY, id=f"many-{i}") for i in range(200)]
        results = [None] * len(streams)

        def read(i):
            try:
                results[i] = b"".join(streams[i])
            except Exception as e:  # noqa: BLE001: reported by the assertion below
                results[i] = e

        started = time.time()
        threads = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        failures = [r for r in results if not isinstance(r, bytes)]
        assert not failures, failures[:3]
        for data in results:
            expect_stream(data)
        assert time.time() - started < 60


def test_a_wrong_host_key_is_refused_without_leaking_a_connection(env, tmp_path):
    other = tmp_path / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{env.port} " + (tmp_path / "other_host.pub").read_text())
    before = client_connections(env.port)
    with tunnel(env, known_hosts=known_hosts, sessions=2) as t:
        with pytest.raises(chatai.Error) as refused:
            t.wait_connected(10)
        assert refused.value.code == "permission_denied"
        assert "differs" in str(refused.value)
        with pytest.raises(chatai.Error) as failed:
            b"".join(t.request("chat", STREAM_BODY))
        assert failed.value.code == "permission_denied"
        assert t.health()["sessions_up"] == 0
        # The pool goes on retrying, one attempt per session at a time: refused ones are closed.
        for _ in range(10):
            assert client_connections(env.port) <= before + 2
            time.sleep(0.05)
    assert client_connections(env.port) <= before


def test_an_unknown_host_is_refused_unless_trusted_on_first_use(env, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with tunnel(env, known_hosts=known_hosts) as t:
        with pytest.raises(chatai.Error) as refused:
            t.wait_connected(10)
        assert refused.value.code == "permission_denied" and "not in" in str(refused.value)
    with tunnel(env, known_hosts=known_hosts, trust_on_first_use=True) as t:
        t.wait_connected(10)
        expect_stream(b"".join(t.request("chat", STREAM_BODY)))
    assert "127.0.0.1" in known_hosts.read_text()


def test_a_wrong_client_key_is_an_authentication_error(env, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    before = client_connections(env.port)
    with tunnel(env, key=key, sessions=2) as t:
        with pytest.raises(chatai.Error) as refused:
            t.wait_connected(10)
        assert refused.value.code == "permission_denied" and "authentication" in str(refused.value)
        with pytest.raises(chatai.Error) as failed:
            b"".join(t.request("chat", STREAM_BODY))
        assert failed.value.code == "permission_denied"
        for _ in range(10):
            assert client_connections(env.port) <= before + 2
            time.sleep(0.05)
    assert client_connections(env.port) <= before


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_requests_share_one_long_lived_gate_per_session(env):
    with tunnel(env, sessions=1) as t:
        t.wait_connected(10)
        streams = [t.request("slow", STREAM_BODY, id=f"shared-{i}") for i in range(20)]
        for s in streams:
            assert s.read(timeout=10)
        # Version 2: one gate process carries all 20 (version 1 would run 20, through 2 sessions' worth
        # of channels, since sshd allows 32 here).
        assert len(gate_processes(env)) == 1
        for s in streams:
            s.cancel()
        expect_stream(b"".join(t.request("chat", STREAM_BODY)))
        assert len(gate_processes(env)) == 1


def test_a_cancelled_request_is_closed_at_the_gate_within_a_second(env):
    with tunnel(env, sessions=1) as t:
        t.wait_connected(10)
        stream = t.request("slow", STREAM_BODY, id="cancel-me")
        assert stream.read(timeout=10)
        session_gates = gate_processes(env)
        assert len(session_gates) == 1
        stream.cancel()
        # The gate records the request as its client gone at once; its session goes on.
        assert wait_for(lambda: any(u["id"] == "cancel-me" for u in env.usage()), 1.0)
        assert [u["outcome"] for u in env.usage() if u["id"] == "cancel-me"] == ["client_gone"]
        with pytest.raises(chatai.Error) as ended:
            while stream.read(timeout=5):
                pass
        assert ended.value.code == "cancelled"
        expect_stream(b"".join(t.request("chat", STREAM_BODY)))
        assert gate_processes(env) == session_gates


def test_a_gate_without_sessions_gets_one_channel_per_request(env):
    with tunnel(env, key=env.add_v1_only_key(), sessions=1) as t:
        t.wait_connected(10)
        expect_stream(b"".join(t.request("chat", STREAM_BODY, id="v1-1")))
        stream = t.request("slow", STREAM_BODY, id="v1-cancel")
        assert stream.read(timeout=10)
        others = [t.request("slow", STREAM_BODY, id=f"v1-{i}") for i in range(3)]
        for s in others:
            assert s.read(timeout=10)
        assert len(gate_processes(env)) == 4
        stream.cancel()
        for s in others:
            s.cancel()
        # In version 1 a cancelled request's gate process goes at once.
        assert wait_for(lambda: gate_processes(env) == [], 1.0)
        with pytest.raises(chatai.Error) as ended:
            while stream.read(timeout=5):
                pass
        assert ended.value.code == "cancelled"
        expect_stream(b"".join(t.request("chat", STREAM_BODY)))


def test_sessions_rotate_without_losing_a_request(build_dir):
    rotating = GateEnvironment(pathlib.Path(build_dir) / "bin" / "chatai-gate", breaker_threshold=1000,
                               gate_settings={"session": {"max_session_requests": 5, "max_requests": 4}})
    try:
        rotating.add_backend("1001", service="chat", events=5, gap=0.01)
        with chatai.Tunnel("127.0.0.1", USER, str(rotating.client_key), str(rotating.known_hosts),
                           port=rotating.port, keep_alive_interval=0, sessions=2) as t:
            t.wait_connected(10)
            seen = set()
            for round in range(6):
                streams = [t.request("chat", STREAM_BODY, id=f"rot-{round}-{i}") for i in range(10)]
                for s in streams:
                    expect_stream(b"".join(s))
                seen.update(gate_processes(rotating))
            # 60 requests, at most 5 per session: a dozen gate processes came and went, none failed.
            assert len(seen) >= 6
            assert len([u for u in rotating.usage() if u["id"].startswith("rot-")]) == 60
            assert all(u["outcome"] == "ok" for u in rotating.usage())
    finally:
        rotating.close()


def test_the_tunnel_recovers_when_sshd_is_killed_and_restarted(env):
    with tunnel(env, sessions=4, channels_per_session=8, reconnect_initial=0.05, reconnect_max=0.3) as t:
        t.wait_connected(10)
        streams = [t.request("slow", STREAM_BODY, id=f"doomed-{i}") for i in range(16)]
        for s in streams:
            assert s.read(timeout=10)
        env.kill_sshd()
        # Streams cut off end with a clean error, not a hang.
        for s in streams:
            with pytest.raises(chatai.Error) as broken:
                while s.read(timeout=10):
                    pass
            assert broken.value.code == "unavailable"
        env.start_sshd()
        restarted = time.monotonic()
        while True:
            try:
                expect_stream(b"".join(t.request("chat", STREAM_BODY, first_byte_timeout=2.0)))
                break
            except chatai.Error:
                assert time.monotonic() - restarted < 2.0
        assert time.monotonic() - restarted < 2.0
        # The whole pool comes back.
        more = [t.request("chat", STREAM_BODY, id=f"after-{i}") for i in range(32)]
        for s in more:
            expect_stream(b"".join(s))


def test_the_local_transport_runs_the_gate_as_a_child(env, tmp_path):
    # A copy of the state, so that files the gate writes as root stay out of the sshd user's.
    # In-flight markers stay behind: the session gates of earlier tests still own (and rename
    # or remove) theirs while the copy runs.
    state = tmp_path / "state"
    shutil.copytree(env.state, state,
                    ignore=lambda folder, names: names if pathlib.Path(folder).name == "inflight" else [])
    config = tmp_path / "gate.json"
    config.write_text(json.dumps({**json.loads(env.config.read_text()), "state_dir": str(state)}))
    with chatai.Tunnel.local(str(env.gate), str(config), keep_alive_interval=0) as t:
        expect_stream(b"".join(t.request("chat", STREAM_BODY, id="local-1")))
        assert {s["id"] for s in t.status()["services"]} == {"chat", "slow"}
        t.keep_alive()
        stream = t.request("slow", STREAM_BODY)
        assert stream.read(timeout=10)
        stream.cancel()
        with pytest.raises(chatai.Error) as ended:
            while stream.read(timeout=5):
                pass
        assert ended.value.code == "cancelled"
