"""`chatai serve` on the real model through the official openai client: chat and completions,
streaming and not, sampling parameters, errors, metrics, disconnects and concurrency."""

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

MODEL = "smollm2"
CONTEXT = 512


def start_server(build_dir, test_model, *extra):
    """Starts `chatai serve` on a free port; returns the process and its listening line."""
    binary = build_dir / "bin" / "chatai"
    assert binary.exists(), f"{binary} is not built"
    proc = subprocess.Popen(
        [str(binary), "--log-level", "warn", "serve", "--model", str(test_model), "--port", "0",
         "--served-model-name", MODEL, "--threads", "2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError("chatai serve exited: " + proc.stderr.read())
    event = json.loads(line)
    assert event["event"] == "listening" and event["host"] == "127.0.0.1" and event["port"] > 0
    return proc, event


def stop_server(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def get(port, path, headers=None):
    """GET on the server: (status, body text)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(port, name):
    _, text = get(port, "/metrics")
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def server(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", str(CONTEXT), "--parallel", "32")
    yield event["port"]
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused", max_retries=0, timeout=120)


def chat(client, text="Name three colors.", **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def test_health_and_models(server, client):
    assert get(server, "/health") == (200, '{"status":"ok"}')
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    # Without --api-key-file there is no job key to prove.
    assert get(server, "/chatai/proof", {"X-Chatai-Challenge": "0" * 64})[0] == 404


def test_chat_completion(client):
    r = chat(client, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert abs(r.created - time.time()) < 60
    assert r.model == MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_accepts_text_parts_system_metadata_and_identifiers(client):
    r = client.chat.completions.create(
        model=MODEL, max_completion_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        extra_body={"parallel_tool_calls": False, "metadata": {"x": "y"}, "prompt_cache_key": "k"}, user="tester")
    assert r.usage.completion_tokens <= 4


def test_chat_stream_with_usage(client):
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}, temperature=0))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert text == chat(client, temperature=0).choices[0].message.content


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert r.choices[0].text and r.usage.completion_tokens <= 6
    streamed = list(client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text


def test_max_tokens_gives_length(client):
    r = chat(client, "Write a long story about a dragon.", max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_stop_string(client):
    prompt = "Describe the ocean in two sentences."
    full = chat(client, prompt, max_tokens=24, temperature=0).choices[0].message.content
    assert len(full) > 12
    stop = full[len(full) // 2:len(full) // 2 + 4]
    r = chat(client, prompt, max_tokens=24, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.find(stop)]


def test_n_choices(client):
    r = chat(client, n=2, temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert 2 <= r.usage.completion_tokens <= 16  # both choices counted, the prompt once
    chunks = list(chat(client, n=2, stream=True, temperature=1.0, seed=3))
    streamed = {0: "", 1: ""}
    for c in chunks:
        for ch in c.choices:
            streamed[ch.index] += ch.delta.content or ""
    assert streamed == {0: r.choices[0].message.content, 1: r.choices[1].message.content}


def test_same_seed_same_text(client):
    kw = dict(max_tokens=12, temperature=1.0, top_p=0.95, seed=1234, extra_body={"top_k": 40})
    a = chat(client, "Tell me a joke.", **kw)
    b = chat(client, "Tell me a joke.", **kw)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_sampling_parameters_accepted(client):
    r = chat(client, temperature=0.7, presence_penalty=0.5, frequency_penalty=0.5,
             extra_body={"repetition_penalty": 1.1, "top_k": 20, "min_p": 0.05}, logit_bias={"42": -100})
    assert r.choices[0].message.content is not None


def test_logprobs(client):
    r = chat(client, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and t.bytes
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    c = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3


def test_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, temperature=5)
    assert e.value.status_code == 400 and e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages="hello")
    with pytest.raises(openai.BadRequestError):
        chat(client, max_tokens="many")
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "word " * (CONTEXT + 10))
    assert e.value.code == "context_length_exceeded"
    assert str(CONTEXT) in e.value.message


def test_invalid_json_is_400(server):
    req = urllib.request.Request(f"http://127.0.0.1:{server}/v1/chat/completions", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    body = json.loads(e.value.read())
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"


def test_metrics(server, client):
    chat(client, max_tokens=2)
    _, text = get(server, "/metrics")
    for name in ("chatai_requests_running", "chatai_requests_waiting", "chatai_prompt_tokens_total",
                 "chatai_generation_tokens_total", "chatai_time_to_first_token_seconds_bucket",
                 "chatai_inter_token_latency_seconds_bucket", "chatai_kv_cache_tokens", "chatai_kv_cache_usage_ratio"):
        assert name in text
    assert metric(server, "chatai_generation_tokens_total") > 0


def test_disconnect_frees_the_sequence(server):
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": 400, "temperature": 1.0, "seed": 1,
                       "messages": [{"role": "user", "content": "Write a very long essay about the sea."}]})
    with socket.create_connection(("127.0.0.1", server), timeout=30) as s:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        received = b""
        while received.count(b"data: ") < 4:
            received += s.recv(4096)
        assert metric(server, "chatai_sequences_running") == 1
    deadline = time.time() + 10
    while metric(server, "chatai_sequences_running") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(server, "chatai_sequences_running") == 0
    assert metric(server, "chatai_kv_cache_tokens") == 0
    _, text = get(server, "/metrics")
    assert re.search(r'chatai_requests_finished_total\{outcome="cancelled"\} [1-9]', text)


def test_32_concurrent_streams(client):
    results = [None] * 32
    errors = []

    def run(i):
        try:
            chunks = list(chat(client, f"Say the number {i}.", max_tokens=6, stream=True,
                               stream_options={"include_usage": True}, temperature=0.8, seed=i))
            results[i] = chunks
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    for i, chunks in enumerate(results):
        usage = chunks[-1].usage
        single = chat(client, f"Say the number {i}.", max_tokens=1)
        assert usage.prompt_tokens == single.usage.prompt_tokens
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finish) == 1
        assert 0 < usage.completion_tokens <= 6
        if finish[0] == "length":
            assert usage.completion_tokens == 6
