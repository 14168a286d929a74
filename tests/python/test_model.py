"""chatai.Model on the real model: tokenizing against `chatai tokenize`, the chat template
against `chatai template --model`, and streamed generation with cancellation."""

import json
import subprocess
import threading

import pytest

import chatai

TEXTS = [
    "Hello, world!",
    "The library opens at nine in the morning.",
    "Ünïcödé text, emoji 🙂 and digits 12345.",
    "  leading spaces\nand a second line\n",
]

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def model(test_model):
    return chatai.Model(str(test_model), device="cpu", threads=2)


def cli(build_dir, *args, stdin=""):
    return subprocess.run([str(build_dir / "bin" / "chatai"), *args], input=stdin.encode(), capture_output=True,
                          check=True).stdout.decode()


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_matches_the_cli_and_round_trips(model, build_dir, test_model, text):
    ids = model.tokenize(text)
    assert ids == [int(t) for t in cli(build_dir, "tokenize", "--model", str(test_model), stdin=text).split()]
    assert model.detokenize(ids) == text
    assert all(0 <= i < model.vocab_size for i in ids)


def test_tokenize_flags(model):
    assert len(model.tokenize("<|im_start|>", special=True)) == 1
    assert len(model.tokenize("<|im_start|>")) > 1
    with_bos = model.tokenize("Hi", add_bos=True)
    assert with_bos[1:] == model.tokenize("Hi") and len(with_bos) == len(model.tokenize("Hi")) + 1
    assert model.detokenize([]) == ""
    with pytest.raises(chatai.Error) as info:
        model.detokenize([model.vocab_size + 5])
    assert info.value.code == "out_of_range"


def test_load_errors(test_model):
    with pytest.raises(chatai.Error) as info:
        chatai.Model("/nonexistent/model.gguf")
    assert info.value.code == "not_found"
    with pytest.raises(chatai.Error) as info:
        chatai.Model(str(test_model), device="tpu")
    assert info.value.code == "invalid_argument"


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_apply_template_matches_the_cli(model, build_dir, test_model, add_generation_prompt):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there, ça va?"},
        {"role": "assistant", "content": "Fine."},
        {"role": "user", "content": "Good."},
    ]
    ours = model.apply_template(messages, add_generation_prompt=add_generation_prompt)
    context = json.dumps({"messages": messages, "add_generation_prompt": add_generation_prompt})
    assert ours == cli(build_dir, "template", "--model", str(test_model), stdin=context)
    assert ours.endswith("<|im_start|>assistant\n") == add_generation_prompt
    with pytest.raises(chatai.Error) as info:
        model.apply_template({"role": "user"})
    assert info.value.code == "invalid_argument"


def test_greedy_chat_knows_paris(model):
    stream = model.chat(QUESTION, max_tokens=24, temperature=0)
    pieces = list(stream)
    assert len(pieces) > 1 and all(pieces)
    assert "Paris" in "".join(pieces)
    assert stream.finish_reason in ("stop", "length")
    assert stream.prompt_tokens > 10 and 0 < stream.completion_tokens <= 24


def test_generate_streams_and_respects_limits(model):
    stream = model.generate("The library opens at nine in the morning and", max_tokens=8, temperature=0,
                            stop=["\n\n\n"])
    text = "".join(stream)
    assert text and stream.finish_reason == "length" and stream.completion_tokens == 8
    assert list(stream) == []
    greedy = "".join(model.generate("The library opens at nine in the morning and", max_tokens=8, temperature=0))
    assert greedy == text


def test_stop_strings_end_the_text(model):
    stream = model.chat(QUESTION, max_tokens=24, temperature=0, stop=["Paris"])
    text = "".join(stream)
    assert "Paris" not in text and text
    assert stream.finish_reason == "stop"


def test_seed_repeats_sampling(model):
    prompt = "Once upon a time"
    runs = ["".join(model.generate(prompt, max_tokens=12, temperature=1.0, seed=7)) for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


def test_closing_cancels(model):
    stream = model.generate("Once upon a time", max_tokens=200, temperature=0)
    first = next(stream)
    assert first
    stream.close()
    assert stream.finish_reason == "cancelled"
    assert stream.completion_tokens < 200
    assert list(stream) == []
    with model.chat(QUESTION, max_tokens=200) as s:
        for _ in s:
            break
    assert s.finish_reason == "cancelled"


def test_breaking_out_frees_the_sequence(model):
    for _ in range(3):
        for piece in model.generate("Once upon a time", max_tokens=200, temperature=0):
            assert piece
            break
    assert "Paris" in "".join(model.chat(QUESTION, max_tokens=24, temperature=0))


def test_bad_parameters(model):
    for kwargs in ({"temperature": -1.0}, {"top_p": 1.5}, {"max_tokens": 0}):
        with pytest.raises(chatai.Error) as info:
            model.generate("Hi", **kwargs)
        assert info.value.code == "invalid_argument"


def test_streams_from_two_threads(model):
    results = {}

    def run(name):
        results[name] = "".join(model.chat(QUESTION, max_tokens=24, temperature=0))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"] == results["b"] and "Paris" in results["a"]
