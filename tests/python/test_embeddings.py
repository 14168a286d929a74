"""`chatai serve`'s /v1/embeddings on the real model through the official openai client: the
answer's shape and usage, batches, token ids, base64, the chatai extensions pooling and
normalize, refusals naming the field, metrics, streams running beside embeddings, and the
vectors against the NumPy reference of the forward pass (tests/engine/reference/llama_reference.py)."""

import base64
import json
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from test_serve import metric, start_server, stop_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = "smollm2"
CONTEXT = 512
N_EMBD = 576
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.", "Hello"]


@pytest.fixture(scope="module")
def server(build_dir, test_model):
    proc, event = start_server(build_dir, test_model, "--ctx", str(CONTEXT), "--parallel", "4")
    yield event["port"]
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def reference(test_model):
    sys.path.insert(0, str(ROOT / "tests" / "engine" / "reference"))
    import llama_reference

    return llama_reference.Model(test_model)


def tokens_of(build_dir, test_model, text):
    """The token ids `chatai tokenize` gives (this model adds neither BOS nor EOS)."""
    out = subprocess.run([str(build_dir / "bin" / "chatai"), "tokenize", "--model", str(test_model)],
                         input=text.encode(), capture_output=True, check=True, timeout=60).stdout.decode()
    return [int(t) for t in out.split()]


def post(port, body):
    """POST /v1/embeddings: (status, parsed JSON)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def vector(client, text, **kw):
    return np.array(client.embeddings.create(model=MODEL, input=text, encoding_format="float", **kw).data[0].embedding)


def pooled(hidden, pooling, normalize=True):
    v = hidden.mean(axis=0) if pooling == "mean" else hidden[-1]
    return v / np.linalg.norm(v) if normalize else v


def test_one_string(client, build_dir, test_model):
    r = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float", user="tester")
    assert r.object == "list" and r.model == MODEL
    assert len(r.data) == 1 and r.data[0].object == "embedding" and r.data[0].index == 0
    v = np.array(r.data[0].embedding)
    assert v.shape == (N_EMBD,) and np.all(np.isfinite(v))
    assert abs(np.linalg.norm(v) - 1.0) < 1e-5  # normalized by default
    n = len(tokens_of(build_dir, test_model, TEXTS[0]))
    assert r.usage.prompt_tokens == n and r.usage.total_tokens == n
    # The same count as a completion's prompt of the same text.
    c = client.completions.create(model=MODEL, prompt=TEXTS[0], max_tokens=1, temperature=0)
    assert c.usage.prompt_tokens == n


def test_batch_equals_one_by_one(client):
    r = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    singles = [client.embeddings.create(model=MODEL, input=t, encoding_format="float") for t in TEXTS]
    for d, s in zip(r.data, singles):
        np.testing.assert_allclose(d.embedding, s.data[0].embedding, atol=1e-6)
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    # Different texts, different directions.
    a, b = np.array(r.data[0].embedding), np.array(r.data[1].embedding)
    assert a @ b < 0.999


def test_token_ids_equal_their_text(client, build_dir, test_model):
    ids = [tokens_of(build_dir, test_model, t) for t in TEXTS[:2]]
    texts = client.embeddings.create(model=MODEL, input=TEXTS[:2], encoding_format="float")
    one = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
    both = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, texts.data[0].embedding, atol=1e-6)
    for d, t in zip(both.data, texts.data):
        np.testing.assert_allclose(d.embedding, t.embedding, atol=1e-6)
    assert one.usage.prompt_tokens == len(ids[0])
    assert both.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_base64_is_the_float32_bytes(server, client):
    status, floats = post(server, {"model": MODEL, "input": TEXTS, "encoding_format": "float"})
    assert status == 200
    status, encoded = post(server, {"model": MODEL, "input": TEXTS, "encoding_format": "base64"})
    assert status == 200 and encoded["usage"] == floats["usage"]
    for f, e in zip(floats["data"], encoded["data"]):
        assert isinstance(e["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(e["embedding"]), dtype="<f4")
        assert decoded.shape == (N_EMBD,)
        assert np.array_equal(decoded, np.array(f["embedding"], dtype=np.float32))  # the same floats, exactly
    # The openai client asks for base64 when no format is given, and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=TEXTS[0])
    np.testing.assert_array_equal(np.array(default.data[0].embedding, dtype=np.float32),
                                  np.array(floats["data"][0]["embedding"], dtype=np.float32))


def test_dimensions_only_the_models_width(client):
    assert len(client.embeddings.create(model=MODEL, input="x", encoding_format="float",
                                        dimensions=N_EMBD).data[0].embedding) == N_EMBD
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="x", dimensions=64)
    assert e.value.body["param"] == "dimensions" and str(N_EMBD) in e.value.message


def test_pooling_and_normalize(client):
    mean = vector(client, TEXTS[1])
    last = vector(client, TEXTS[1], extra_body={"pooling": "last"})
    np.testing.assert_allclose(vector(client, TEXTS[1], extra_body={"pooling": "mean"}), mean, atol=1e-7)
    assert abs(np.linalg.norm(last) - 1.0) < 1e-5
    assert mean @ last < 0.99
    raw = vector(client, TEXTS[1], extra_body={"normalize": False})
    assert abs(np.linalg.norm(raw) - 1.0) > 0.01
    np.testing.assert_allclose(raw / np.linalg.norm(raw), mean, atol=1e-6)


def test_refusals_name_the_field(server, client):
    def refused(param, **kw):
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(**{"model": MODEL, **kw})
        assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body
        return e.value

    refused("input", input="")
    refused("input", input=[])
    refused("input", input=["a", ""])
    refused("input", input=[[1, 2], []])
    refused("input", input=[1, 49152])  # outside the vocabulary
    refused("input", input=["x"] * 257)
    refused("encoding_format", input="x", encoding_format="int8")
    refused("pooling", input="x", extra_body={"pooling": "cls"})
    refused("normalize", input="x", extra_body={"normalize": "yes"})
    unknown = refused("truncate", input="x", extra_body={"truncate": True})
    assert "Unrecognized request argument supplied: truncate" in unknown.message
    too_long = refused("input", input="word " * (CONTEXT + 10))
    assert too_long.code == "context_length_exceeded" and str(CONTEXT) in too_long.message
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="other", input="x")
    assert e.value.code == "model_not_found"
    status, body = post(server, {"model": MODEL, "input": [[1], "a"]})
    assert status == 400 and body["error"]["param"] == "input"


def test_metrics_count_requests_and_tokens(server, client):
    before_requests = metric(server, 'chatai_embedding_requests_total{outcome="ok"}')
    before_tokens = metric(server, "chatai_embedding_tokens_total")
    r = client.embeddings.create(model=MODEL, input=TEXTS)
    assert metric(server, 'chatai_embedding_requests_total{outcome="ok"}') == before_requests + 1
    assert metric(server, "chatai_embedding_tokens_total") == before_tokens + r.usage.prompt_tokens


def test_streams_go_on_while_embeddings_run(client):
    """Embedding work runs between the decoding steps: a stream beside it keeps its text."""
    kw = dict(model=MODEL, max_tokens=24, temperature=0,
              messages=[{"role": "user", "content": "Write one sentence about the sea."}])
    # Twice alone first: the second run, like the stream, takes all but the prompt's last token
    # from the prefix cache, so the same kernels compute the same logits for both.
    client.chat.completions.create(**kw)
    alone = client.chat.completions.create(**kw).choices[0].message.content
    pieces, errors = [], []

    def stream():
        try:
            for chunk in client.chat.completions.create(stream=True, **kw):
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
        except Exception as e:  # noqa: BLE001: reported below
            errors.append(e)

    t = threading.Thread(target=stream)
    t.start()
    vectors = [client.embeddings.create(model=MODEL, input=["word " * 300, TEXTS[0]]) for _ in range(3)]
    t.join(timeout=300)
    assert not errors and not t.is_alive()
    assert "".join(pieces) == alone
    assert all(len(v.data) == 2 for v in vectors)


def test_vectors_match_the_numpy_reference(client, reference, build_dir, test_model):
    """The engine rounds the activations to 8 bits before each quantized product (the f32 path
    matches the reference within 1e-4, tests/engine/test_forward.cpp): measured with avx512,
    cosines of 0.99936 to 0.99987 and largest element errors of 0.003 to 0.019 of the norm."""
    texts = TEXTS[:2] + ["Embeddings map a text to a vector. " * 40]  # the last one spans two chunks of 256
    for text in texts:
        ids = tokens_of(build_dir, test_model, text)
        hidden = reference.hidden_states(ids).astype(np.float64)
        for pooling in ("mean", "last"):
            for normalize in (True, False):
                got = vector(client, text, extra_body={"pooling": pooling, "normalize": normalize})
                want = pooled(hidden, pooling, normalize)
                cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
                error = np.max(np.abs(got - want)) / np.linalg.norm(want)  # of a unit vector when normalized
                print(f"{len(ids)} tokens, {pooling}, normalize={normalize}: cosine {cosine:.6f}, "
                      f"max abs error {error:.4f} (relative to the norm)")
                assert cosine > 0.999, (len(ids), pooling, cosine)
                assert error < 0.03, (len(ids), pooling, error)


def test_embedding_throughput(client, build_dir, test_model):
    """Prints the figure: tokens per second for one 100-token input (2 threads)."""
    text = " ".join(["alpha"] * 100)
    ids = tokens_of(build_dir, test_model, text)[:100]
    assert len(ids) == 100
    client.embeddings.create(model=MODEL, input=ids)
    runs = 5
    start = time.perf_counter()
    for _ in range(runs):
        client.embeddings.create(model=MODEL, input=ids)
    seconds = (time.perf_counter() - start) / runs
    print(f"embedding 100 tokens: {seconds * 1000:.1f} ms, {100 / seconds:.0f} tokens/s")
