"""`chatai serve` under load and shutdown: the queue limit, draining on SIGUSR1 and SIGTERM,
API keys and the job key proof, the endpoint file the scheduler reads, and chatai.Server
in-process. Each test starts its own small server."""

import hashlib
import hmac
import json
import secrets
import signal
import socket
import subprocess
import threading
import time

import openai
import pytest

import chatai
from test_serve import MODEL, get, start_server, stop_server


def client_for(port, key="unused"):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)


def long_stream(client, max_tokens=300):
    return client.chat.completions.create(
        model=MODEL, stream=True, max_tokens=max_tokens, temperature=1.0, seed=7,
        messages=[{"role": "user", "content": "Write a very long essay about the history of ships."}])


def test_queue_limit_gives_429(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", "512", "--parallel", "1", "--max-queue", "1")
    try:
        client = client_for(event["port"])
        running = long_stream(client)
        next(iter(running))  # it holds the only slot
        waiting = []
        t = threading.Thread(target=lambda: waiting.append(list(long_stream(client, 4))))
        t.start()
        deadline = time.time() + 10
        while "chatai_requests_waiting 1" not in get(event["port"], "/metrics")[1] and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        assert e.value.response.headers["retry-after"] == "1"
        running.close()
        t.join(timeout=120)
        assert waiting and waiting[0][-1].choices[0].finish_reason in ("stop", "length")
    finally:
        stop_server(proc)


def test_sigusr1_drains_then_exits(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", "512", "--parallel", "4")
    port = event["port"]
    try:
        client = client_for(port)
        streams = [long_stream(client, 24) for _ in range(2)]
        firsts = [next(iter(s)) for s in streams]
        assert all(f.choices[0].delta.role == "assistant" for f in firsts)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.time() + 10
        while get(port, "/health")[0] != 503 and time.time() < deadline:
            time.sleep(0.02)
        assert get(port, "/health") == (503, '{"status":"draining"}')
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503
        for s in streams:
            chunks = list(s)
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
        assert proc.wait(timeout=60) == 0
    finally:
        stop_server(proc)


def test_second_sigterm_exits_at_once(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", "512")
    try:
        stream = long_stream(client_for(event["port"]), 400)
        next(iter(stream))
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert proc.poll() is None  # draining: the stream is still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) != 0
    finally:
        stop_server(proc)


def test_api_key(build_dir, test_model, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    key_file.chmod(0o644)
    binary = build_dir / "bin" / "chatai"
    refused = subprocess.run(
        [str(binary), "serve", "--model", str(test_model), "--port", "0", "--api-key-file", str(key_file)],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    key_file.chmod(0o600)
    proc, event = start_server(build_dir, test_model, "--ctx", "512", "--api-key-file", str(key_file))
    port = event["port"]
    try:
        assert get(port, "/health")[0] == 200
        assert get(port, "/metrics")[0] == 401
        assert get(port, "/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
        with pytest.raises(openai.AuthenticationError):
            client_for(port, "wrong").models.list()
        good = client_for(port, "s3cret-key")
        assert good.models.list().data[0].id == MODEL
        r = good.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
        assert r.usage.completion_tokens <= 2
        status, metrics = get(port, "/metrics", {"Authorization": "Bearer s3cret-key"})
        assert status == 200 and "s3cret" not in metrics

        # The job key proof needs no key from the caller and gives only the HMAC of the
        # challenge it was sent, under the key and the fixed label.
        for _ in range(2):
            challenge = secrets.token_hex(32)
            status, proof = get(port, "/chatai/proof", {"X-Chatai-Challenge": challenge})
            expected = hmac.new(b"s3cret-key", b"chatai-job-key-proof-v1\n" + challenge.encode(), hashlib.sha256)
            assert status == 200 and proof == expected.hexdigest()
        for bad in (None, "", "ab" * 31, "ab" * 33, "AB" * 32, "g" * 64, "0" * 63 + " ", "s3cret-key"):
            headers = {} if bad is None else {"X-Chatai-Challenge": bad}
            status, body = get(port, "/chatai/proof", headers)
            assert status == 400 and "s3cret" not in body, bad
        assert "s3cret" not in " ".join(proc.args)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "s3cret" not in err
    finally:
        stop_server(proc)


def wait_for_file(path, limit=30):
    deadline = time.time() + limit
    while not path.exists():
        assert time.time() < deadline, f"{path} was not written"
        time.sleep(0.02)
    return json.loads(path.read_text())


def test_endpoint_file(build_dir, test_model, tmp_path):
    endpoint = tmp_path / "endpoints" / "job.json"
    endpoint.parent.mkdir()
    proc, event = start_server(build_dir, test_model, "--ctx", "256", "--endpoint-file", str(endpoint))
    try:
        assert wait_for_file(endpoint) == {"host": "127.0.0.1", "port": event["port"]}
        assert endpoint.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in endpoint.parent.iterdir()] == ["job.json"]  # written by rename
        assert get(event["port"], "/health")[0] == 200
    finally:
        stop_server(proc)

    # Bound to every address, the server names its node.
    endpoint.unlink()
    proc = subprocess.Popen(
        [str(build_dir / "bin" / "chatai"), "--log-level", "warn", "serve", "--model", str(test_model), "--host",
         "0.0.0.0", "--port", "0", "--ctx", "256", "--threads", "1", "--endpoint-file", str(endpoint)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        event = json.loads(proc.stdout.readline())
        assert wait_for_file(endpoint) == {"host": socket.gethostname(), "port": event["port"]}
    finally:
        stop_server(proc)

    refused = subprocess.run(
        [str(build_dir / "bin" / "chatai"), "serve", "--model", str(test_model), "--port", "0", "--ctx", "256",
         "--endpoint-file", str(tmp_path / "missing" / "job.json")],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--endpoint-file" in refused.stderr


def test_server_in_process(test_model):
    with chatai.Server(model=str(test_model), port=0, served_model_name=MODEL, ctx=512, threads=2) as server:
        assert server.port > 0 and server.state == "ready"
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        r = client_for(server.port).completions.create(model=MODEL, prompt="Hello", max_tokens=3)
        assert r.usage.completion_tokens <= 3
        server.drain()
        server.wait_drained()
        assert server.state == "draining"
        assert get(server.port, "/health") == (503, '{"status":"draining"}')
    with pytest.raises(chatai.Error) as e:
        chatai.Server(model="/nonexistent/model.gguf")
    assert e.value.code == "not_found"
    with pytest.raises(chatai.Error) as e:
        chatai.Server(model=str(test_model), prefix_cache_tokens=-2)
    assert e.value.code == "invalid_argument" and "prefix_cache_tokens" in str(e.value)
    # Without a prefix cache the same prompt twice is computed twice.
    with chatai.Server(model=str(test_model), port=0, served_model_name=MODEL, ctx=512, threads=2,
                       prefix_cache_tokens=0) as server:
        prompt = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
        for _ in range(2):
            r = client_for(server.port).completions.create(model=MODEL, prompt=prompt, max_tokens=2)
            assert r.usage.prompt_tokens_details is None or r.usage.prompt_tokens_details.cached_tokens == 0
