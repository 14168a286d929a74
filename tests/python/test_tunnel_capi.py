"""The tunnel's C ABI (libchatai.so, through ctypes) over a real OpenSSH sshd on loopback whose
key runs the real chatai-gate: a request streams through the data callback and ends OK, the
gate's status is copied into a caller's buffer, keep-alive and health work, a cancelled request
ends with CHATAI_ERROR_CANCELLED, and a wrong host key is refused."""

import ctypes
import json
import pathlib
import subprocess
import threading
import time

import pytest

from gate_sshd_env import USER, GateEnvironment, dechunk, unavailable_reason

OK, CANCELLED, PERMISSION_DENIED, OUT_OF_RANGE = 0, 8, 11, 5
STREAM_BODY = json.dumps({"model": "smol", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()


class SshOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("host", ctypes.c_char_p), ("port", ctypes.c_int),
                ("user", ctypes.c_char_p), ("key_file", ctypes.c_char_p), ("passphrase", ctypes.c_char_p),
                ("known_hosts", ctypes.c_char_p), ("trust_on_first_use", ctypes.c_int), ("sessions", ctypes.c_int),
                ("channels_per_session", ctypes.c_int), ("max_queued", ctypes.c_int),
                ("connect_timeout_ms", ctypes.c_int64), ("reconnect_initial_ms", ctypes.c_int64),
                ("reconnect_max_ms", ctypes.c_int64), ("keep_alive_interval_ms", ctypes.c_int64),
                ("keep_alive_timeout_ms", ctypes.c_int64)]


class RequestOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("id", ctypes.c_char_p), ("user", ctypes.c_char_p),
                ("service", ctypes.c_char_p), ("method", ctypes.c_char_p), ("path", ctypes.c_char_p),
                ("header_names", ctypes.POINTER(ctypes.c_char_p)), ("header_values", ctypes.POINTER(ctypes.c_char_p)),
                ("n_headers", ctypes.c_size_t), ("body", ctypes.c_char_p), ("body_len", ctypes.c_size_t),
                ("first_byte_timeout_ms", ctypes.c_int64), ("idle_timeout_ms", ctypes.c_int64),
                ("window", ctypes.c_size_t)]


class Health(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("alive", ctypes.c_int), ("since_keep_alive_ms", ctypes.c_int64),
                ("sessions_up", ctypes.c_int), ("requests_running", ctypes.c_int),
                ("requests_queued", ctypes.c_int), ("last_error", ctypes.c_char * 256)]


DATA_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t, ctypes.c_void_p)
END_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@pytest.fixture(scope="module")
def lib(build_dir):
    found = sorted(pathlib.Path(build_dir).glob("capi/libchatai.so*"))
    assert found, f"libchatai.so is not built in {build_dir}/capi"
    lib = ctypes.CDLL(str(found[0]))
    lib.chatai_last_error.restype = ctypes.c_char_p
    lib.chatai_tunnel_create_ssh.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(SshOptions)]
    lib.chatai_tunnel_free.argtypes = [ctypes.c_void_p]
    lib.chatai_tunnel_wait_connected.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.chatai_tunnel_request.argtypes = [ctypes.c_void_p, ctypes.POINTER(RequestOptions), DATA_CALLBACK,
                                          END_CALLBACK, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.chatai_tunnel_stream_cancel.argtypes = [ctypes.c_void_p]
    lib.chatai_tunnel_stream_free.argtypes = [ctypes.c_void_p]
    lib.chatai_tunnel_status.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(ctypes.c_size_t)]
    lib.chatai_tunnel_keep_alive.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.chatai_tunnel_get_health.argtypes = [ctypes.c_void_p, ctypes.POINTER(Health)]
    return lib


@pytest.fixture(scope="module")
def env(build_dir):
    gate_binary = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    reason = unavailable_reason(gate_binary)
    if reason:
        pytest.fail(reason)
    environment = GateEnvironment(gate_binary, breaker_threshold=1000)
    environment.add_backend("1001", service="chat", events=5, gap=0.01)
    environment.add_backend("2001", service="slow", events=200, gap=0.05)
    yield environment
    environment.close()


def ssh_options(env, known_hosts=None):
    o = SshOptions(version=1, host=b"127.0.0.1", port=env.port, user=USER.encode(),
                   key_file=str(env.client_key).encode(), known_hosts=str(known_hosts or env.known_hosts).encode())
    o.keep_alive_interval_ms = -1
    return o


class Answer:
    """Collects one request's answer from the callbacks, which run on the tunnel's I/O thread."""

    def __init__(self, cancel_after_first=False):
        self.data = b""
        self.status = None
        self.message = None
        self.end_calls = 0
        self.ended = threading.Event()
        self.cancel_after_first = cancel_after_first
        self.on_data = DATA_CALLBACK(self._data)
        self.on_end = END_CALLBACK(self._end)

    def _data(self, data, length, _user):
        self.data += ctypes.string_at(data, length)
        return 1 if self.cancel_after_first else 0

    def _end(self, status, message, _user):
        self.status, self.message = status, message.decode()
        self.end_calls += 1
        self.ended.set()


def request_options(service, body=STREAM_BODY, request_id=b"capi-ssh-1"):
    return RequestOptions(version=1, id=request_id, user=b"web-user-1", service=service, body=body,
                          body_len=len(body))


@pytest.fixture
def tunnel(lib, env):
    handle = ctypes.c_void_p()
    assert lib.chatai_tunnel_create_ssh(ctypes.byref(handle), ctypes.byref(ssh_options(env))) == OK
    assert lib.chatai_tunnel_wait_connected(handle, 10000) == OK, lib.chatai_last_error()
    yield handle
    lib.chatai_tunnel_free(handle)


def test_a_request_streams_through_the_c_abi(lib, env, tunnel):
    answer = Answer()
    stream = ctypes.c_void_p()
    opts = request_options(b"chat")
    assert lib.chatai_tunnel_request(tunnel, ctypes.byref(opts), answer.on_data, answer.on_end, None,
                                     ctypes.byref(stream)) == OK
    assert answer.ended.wait(30)
    assert answer.status == OK and answer.message == "" and answer.end_calls == 1
    status, headers, body, complete = dechunk(answer.data)
    assert status == 200 and complete and headers["content-type"].startswith("text/event-stream")
    assert body.decode().rstrip().endswith("data: [DONE]")
    assert env.usage()[-1]["id"] == "capi-ssh-1"
    lib.chatai_tunnel_stream_free(stream)


def test_status_keep_alive_and_health_through_the_c_abi(lib, tunnel):
    needed = ctypes.c_size_t()
    assert lib.chatai_tunnel_status(tunnel, 10000, None, 0, ctypes.byref(needed)) == OK
    small = ctypes.create_string_buffer(8)
    length = ctypes.c_size_t()
    assert lib.chatai_tunnel_status(tunnel, 10000, small, 8, ctypes.byref(length)) == OUT_OF_RANGE
    assert length.value == needed.value
    buffer = ctypes.create_string_buffer(needed.value + 1)
    assert lib.chatai_tunnel_status(tunnel, 10000, buffer, len(buffer), ctypes.byref(length)) == OK
    assert {s["id"] for s in json.loads(buffer.value)["services"]} == {"chat", "slow"}
    assert lib.chatai_tunnel_keep_alive(tunnel, 10000) == OK
    health = Health(version=1)
    # The counts are refreshed on the I/O thread's next round after an answer ends.
    deadline = time.monotonic() + 2
    while True:
        assert lib.chatai_tunnel_get_health(tunnel, ctypes.byref(health)) == OK
        if health.requests_running == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert health.sessions_up >= 1 and health.requests_running == 0 and health.last_error == b""


def test_a_cancelled_request_ends_cancelled_through_the_c_abi(lib, tunnel):
    from_callback = Answer(cancel_after_first=True)
    opts = request_options(b"slow", request_id=b"capi-cancel-1")
    assert lib.chatai_tunnel_request(tunnel, ctypes.byref(opts), from_callback.on_data, from_callback.on_end, None,
                                     None) == OK
    assert from_callback.ended.wait(30)
    assert from_callback.status == CANCELLED and from_callback.end_calls == 1
    assert b"[DONE]" not in from_callback.data

    from_handle = Answer()
    stream = ctypes.c_void_p()
    opts = request_options(b"slow", request_id=b"capi-cancel-2")
    assert lib.chatai_tunnel_request(tunnel, ctypes.byref(opts), from_handle.on_data, from_handle.on_end, None,
                                     ctypes.byref(stream)) == OK
    assert lib.chatai_tunnel_stream_cancel(stream) == OK
    assert from_handle.ended.wait(10)
    assert from_handle.status == CANCELLED
    lib.chatai_tunnel_stream_free(stream)


def test_a_wrong_host_key_is_refused_through_the_c_abi(lib, env, tmp_path):
    other = tmp_path / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{env.port} " + (tmp_path / "other_host.pub").read_text())
    handle = ctypes.c_void_p()
    assert lib.chatai_tunnel_create_ssh(ctypes.byref(handle), ctypes.byref(ssh_options(env, known_hosts))) == OK
    try:
        assert lib.chatai_tunnel_wait_connected(handle, 10000) == PERMISSION_DENIED
        assert b"differs" in lib.chatai_last_error()
        answer = Answer()
        opts = request_options(b"chat")
        assert lib.chatai_tunnel_request(handle, ctypes.byref(opts), answer.on_data, answer.on_end, None, None) == OK
        assert answer.ended.wait(10)
        assert answer.status == PERMISSION_DENIED and answer.data == b""
    finally:
        lib.chatai_tunnel_free(handle)
