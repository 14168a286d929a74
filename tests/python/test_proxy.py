"""`chatai proxy` in front of the stand-in for vLLM (tests/fixtures/openai_server.py), without
Slurm: the endpoint file only once the upstream serves, the job key proof, the key required and
added upstream, streams forwarded as they arrive, 502 for an upstream that is gone, draining
on a signal, and the refusals of bad arguments. The template under a real Slurm is
tests/slurm/test_vllm_template_slurm.cpp."""

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest

STAND_IN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "openai_server.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, limit=20):
    end = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < end, "not reached in time"
        time.sleep(0.05)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "key"
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def start_upstream(key, port):
    env = dict(os.environ, VLLM_API_KEY=key)
    return subprocess.Popen([sys.executable, STAND_IN, "/models/m", "--served-model-name", "m", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)


def start_proxy(build_dir, key_file, upstream_port, endpoint, *extra):
    return subprocess.Popen([str(build_dir / "bin" / "chatai"), "proxy", "--upstream", f"http://127.0.0.1:{upstream_port}",
                             "--api-key-file", str(key_file), "--endpoint-file", str(endpoint), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get(port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def test_forwards_with_the_key_after_the_upstream_is_ready(build_dir, key_file, tmp_path):
    key = key_file.read_text().strip()
    upstream_port = free_port()
    endpoint = tmp_path / "endpoint.json"
    proxy = start_proxy(build_dir, key_file, upstream_port, endpoint)
    upstream = None
    try:
        time.sleep(1.5)
        assert not endpoint.exists()  # the upstream does not answer yet
        upstream = start_upstream(key, upstream_port)
        wait_for(endpoint.exists)
        doc = json.loads(endpoint.read_text())
        assert doc["host"] == "127.0.0.1" and (endpoint.stat().st_mode & 0o777) == 0o600
        port = doc["port"]
        assert json.loads(proxy.stdout.readline()) == {"event": "listening", "host": "127.0.0.1", "port": port}

        challenge = secrets.token_hex(32)
        status, answer = get(port, "/chatai/proof", {"X-Chatai-Challenge": challenge})
        expected = hmac.new(key.encode(), b"chatai-job-key-proof-v1\n" + challenge.encode(), hashlib.sha256)
        assert status == 200 and answer == expected.hexdigest()
        assert get(port, "/chatai/proof", {"X-Chatai-Challenge": "zz"})[0] == 400
        assert get(port, "/v1/models")[0] == 401
        assert get(port, "/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(port, "/health")[0] == 200

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
        assert [m.id for m in client.models.list()] == ["m"]
        started = time.monotonic()
        stream = client.chat.completions.create(model="m", stream=True, max_tokens=10,
                                                messages=[{"role": "user", "content": "hi"}])
        first = next(iter(stream))
        assert time.monotonic() - started < 0.8  # the first chunk comes before the last is made
        rest = [c.choices[0].delta.content for c in stream]
        assert [first.choices[0].delta.content] + rest == [f"t{i} " for i in range(10)]

        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=10)
        with pytest.raises(openai.InternalServerError) as e:
            client.models.list()
        assert e.value.status_code == 502
    finally:
        stop(proxy, *([upstream] if upstream else []))


def test_a_signal_drains_requests_in_flight(build_dir, key_file, tmp_path):
    key = key_file.read_text().strip()
    upstream_port = free_port()
    endpoint = tmp_path / "endpoint.json"
    upstream = start_upstream(key, upstream_port)
    proxy = start_proxy(build_dir, key_file, upstream_port, endpoint)
    try:
        wait_for(endpoint.exists)
        port = json.loads(endpoint.read_text())["port"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
        stream = client.chat.completions.create(model="m", stream=True, max_tokens=15,
                                                messages=[{"role": "user", "content": "hi"}])
        chunks = [next(iter(stream))]
        proxy.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        with pytest.raises(openai.APIStatusError) as e:
            client.models.list()
        assert e.value.status_code == 503 and e.value.response.headers["retry-after"] == "5"
        assert proxy.poll() is None
        chunks += list(stream)
        assert len(chunks) == 15
        assert proxy.wait(timeout=10) == 0
        assert "proxy: drained, exiting" in proxy.stderr.read()
    finally:
        stop(proxy, upstream)


def test_bad_arguments_and_an_upstream_that_never_serves(build_dir, key_file, tmp_path):
    chatai = str(build_dir / "bin" / "chatai")
    for url in ["127.0.0.1:80", "http://127.0.0.1", "http://127.0.0.1:99999", "http://127.0.0.1:80/v1",
                "http://no-such-host.invalid:80"]:
        r = subprocess.run([chatai, "proxy", "--upstream", url, "--api-key-file", str(key_file)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "--upstream" in r.stderr, url
    key_file.chmod(0o644)
    r = subprocess.run([chatai, "proxy", "--upstream", "http://127.0.0.1:80", "--api-key-file", str(key_file)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "chmod 600" in r.stderr
    key_file.chmod(0o600)
    endpoint = tmp_path / "endpoint.json"
    r = subprocess.run([chatai, "proxy", "--upstream", f"http://127.0.0.1:{free_port()}", "--api-key-file",
                        str(key_file), "--endpoint-file", str(endpoint), "--start-timeout", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "did not answer /v1/models" in r.stderr
    assert not endpoint.exists()
