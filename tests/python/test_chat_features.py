"""The OpenAI API that modern clients send, against `chatai serve` on the real model through the
official openai client: structured outputs (json_object, json_schema), tool calls (auto,
required, named, parallel or not, history with calls and results) in the Hermes, Llama 3 and
Mistral syntaxes, reasoning_content, cached_tokens, and 400s naming what is not supported."""

import json
import secrets
import urllib.request

import jsonschema
import openai
import pytest

from test_serve import MODEL, start_server, stop_server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "nickname": {"type": ["string", "null"], "maxLength": 16},
    },
    "required": ["name", "age", "color", "tags", "address"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                       "required": ["zone"], "additionalProperties": False},
    },
}
SCHEMAS = {"get_weather": WEATHER["function"]["parameters"], "get_time": TIME["function"]["parameters"]}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
CAPITAL = [{"role": "user", "content": 'What is the capital of France? Answer with a JSON object like {"capital": "..."}.'}]


def start(build_dir, test_model, *extra):
    proc, event = start_server(build_dir, test_model, "--ctx", "2048", "--parallel", "8", *extra)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{event['port']}/v1", api_key="unused", max_retries=0,
                           timeout=300)
    return proc, client


@pytest.fixture(scope="module")
def client(build_dir, test_model):
    proc, c = start(build_dir, test_model)
    yield c
    stop_server(proc)


def template(shared_dir, name):
    return str(shared_dir / "testdata" / "templates" / f"{name}.jinja")


def collect_stream(stream):
    """Accumulates a chat stream as the official client's users do: content, reasoning, calls."""
    content, reasoning, calls, finish, usage = "", "", {}, None, None
    first_call_deltas = []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                first_call_deltas.append(tc)
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        if choice.finish_reason:
            finish = choice.finish_reason
    return content, reasoning, [calls[i] for i in sorted(calls)], finish, usage, first_call_deltas


# ---- structured outputs ----

@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_is_valid_even_from_a_small_model(client, stream):
    kw = dict(model=MODEL, max_tokens=400, temperature=0, stream=stream,
              messages=[{"role": "user", "content": "Describe a fictional person as JSON."}],
              response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    if stream:
        content, _, calls, finish, _, _ = collect_stream(client.chat.completions.create(**kw))
    else:
        r = client.chat.completions.create(**kw)
        content, calls, finish = r.choices[0].message.content, r.choices[0].message.tool_calls, r.choices[0].finish_reason
    assert finish == "stop" and not calls
    jsonschema.validate(json.loads(content), PERSON)


def test_json_schema_with_sampling_and_n(client):
    r = client.chat.completions.create(
        model=MODEL, max_tokens=400, temperature=1.0, seed=3, n=4,
        messages=[{"role": "user", "content": "A person, please."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    assert len(r.choices) == 4
    for c in r.choices:
        assert c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.message.content), PERSON)


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_output_is_one_json_object(client, stream):
    kw = dict(model=MODEL, max_tokens=300, temperature=0, stream=stream,
              messages=CAPITAL, response_format={"type": "json_object"})
    if stream:
        content, _, _, finish, _, _ = collect_stream(client.chat.completions.create(**kw))
    else:
        r = client.chat.completions.create(**kw)
        content, finish = r.choices[0].message.content, r.choices[0].finish_reason
    assert finish == "stop"
    assert isinstance(json.loads(content), dict)


def test_a_schema_the_compiler_cannot_honour_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"not": {}}}}}})
    assert e.value.body["param"] == "response_format"
    assert "properties.a" in e.value.body["message"]


# ---- tool calls ----

def check_call(call, tools):
    name = call["name"] if isinstance(call, dict) else call.function.name
    args = call["arguments"] if isinstance(call, dict) else call.function.arguments
    assert name in tools
    jsonschema.validate(json.loads(args), SCHEMAS[name])
    return name


@pytest.mark.parametrize("stream", [False, True])
def test_required_tool_choice_gives_valid_calls(client, stream):
    kw = dict(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", max_tokens=300,
              temperature=0, stream=stream)
    if stream:
        content, _, calls, finish, _, firsts = collect_stream(client.chat.completions.create(**kw))
        assert content == ""
        # The first delta of a call carries its id, type and name with empty arguments, as OpenAI's.
        assert all(f.id.startswith("call_") and f.type == "function" and f.function.arguments == "" for f in firsts)
    else:
        r = client.chat.completions.create(**kw)
        msg = r.choices[0].message
        assert msg.content is None and msg.role == "assistant"
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in msg.tool_calls]
        assert all(c.type == "function" for c in msg.tool_calls)
        finish = r.choices[0].finish_reason
    assert finish == "tool_calls"
    assert calls
    for call in calls:
        assert call["id"].startswith("call_")
        check_call(call, SCHEMAS)
    assert len({c["id"] for c in calls}) == len(calls)


def test_named_tool_choice_calls_that_function(client):
    for name in ("get_weather", "get_time"):
        r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=300,
                                           tool_choice={"type": "function", "function": {"name": name}})
        calls = r.choices[0].message.tool_calls
        assert len(calls) == 1 and calls[0].function.name == name
        check_call(calls[0], SCHEMAS)
        assert r.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_gives_one_call(client):
    for seed in range(4):
        r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=300, temperature=1.0, seed=seed)
        assert len(r.choices[0].message.tool_calls) == 1


def test_tool_choice_none_and_auto_answer_text_or_calls(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",
                                       max_tokens=20, temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=120, temperature=0)
    msg = r.choices[0].message
    if msg.tool_calls:
        assert r.choices[0].finish_reason == "tool_calls"
        for c in msg.tool_calls:
            assert c.function.name == "get_weather"
            json.loads(c.function.arguments)
    else:
        assert msg.content and r.choices[0].finish_reason in ("stop", "length")


def test_history_with_calls_and_results_is_sent_to_the_model(client):
    call = {"id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}
    base = ASK + [{"role": "assistant", "content": None, "tool_calls": [call]}]
    short = client.chat.completions.create(
        model=MODEL, tools=[WEATHER], max_tokens=30, temperature=0,
        messages=base + [{"role": "tool", "tool_call_id": "call_abc", "content": "sunny"}])
    long = client.chat.completions.create(
        model=MODEL, tools=[WEATHER], max_tokens=30, temperature=0,
        messages=base + [{"role": "tool", "tool_call_id": "call_abc",
                          "content": "sunny, 25 degrees, light wind from the west, no rain expected until Friday"}])
    assert long.usage.prompt_tokens - short.usage.prompt_tokens >= 12
    assert short.choices[0].message.content or short.choices[0].message.tool_calls


@pytest.mark.parametrize("name,syntax", [
    ("Qwen-Qwen2.5-7B-Instruct", "hermes"),
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3"),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral"),
])
def test_each_family_syntax_is_rendered_forced_and_parsed(build_dir, test_model, shared_dir, name, syntax):
    proc, client = start(build_dir, test_model, "--chat-template", template(shared_dir, name))
    try:
        for stream in (False, True):
            kw = dict(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", max_tokens=300,
                      temperature=0, stream=stream)
            if stream:
                _, _, calls, finish, _, _ = collect_stream(client.chat.completions.create(**kw))
            else:
                r = client.chat.completions.create(**kw)
                finish = r.choices[0].finish_reason
                calls = [{"name": c.function.name, "arguments": c.function.arguments}
                         for c in r.choices[0].message.tool_calls]
            assert finish == "tool_calls" and calls, syntax
            for c in calls:
                check_call(c, SCHEMAS)
        # Mistral's template wants 9-character call ids in the history.
        call_id = "abcdefghi" if syntax == "mistral" else "call_1"
        r = client.chat.completions.create(
            model=MODEL, tools=[WEATHER], max_tokens=10, temperature=0,
            messages=ASK + [{"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "sunny"}])
        assert r.usage.prompt_tokens > 20
    finally:
        stop_server(proc)


# ---- reasoning ----

def test_reasoning_goes_to_reasoning_content(build_dir, test_model, shared_dir):
    # The DeepSeek R1 template opens <think> in the generation prompt: output is reasoning until </think>.
    proc, client = start(build_dir, test_model, "--chat-template",
                         template(shared_dir, "deepseek-ai-DeepSeek-R1-Distill-Llama-8B"))
    try:
        r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16, temperature=0)
        msg = r.choices[0].message
        reasoning = msg.model_extra.get("reasoning_content")
        assert reasoning and (msg.content or "") == ""
        content, streamed, _, finish, _, _ = collect_stream(client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=16, temperature=0, stream=True))
        assert streamed == reasoning and content == "" and finish == "length"
        # A JSON answer closes the thinking block first: the content is the JSON, no reasoning.
        # (A schema with one property: a free json_object lets the small model run on past max_tokens.)
        schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"],
                  "additionalProperties": False}
        r = client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=200, temperature=0,
                                           response_format={"type": "json_schema",
                                                            "json_schema": {"name": "capital", "schema": schema}})
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(r.choices[0].message.content)["capital"], str)
        assert not r.choices[0].message.model_extra.get("reasoning_content")
        r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, reasoning_effort="low")
        assert r.choices[0].finish_reason == "length"
    finally:
        stop_server(proc)


def test_reasoning_effort_on_a_model_without_reasoning_is_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, reasoning_effort="high")
    assert e.value.body["param"] == "reasoning_effort"


# ---- usage and refusals ----

def metric(client, name):
    text = urllib.request.urlopen(str(client.base_url).replace("/v1/", "/metrics"), timeout=30).read().decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_cached_tokens_count_the_prefix_an_earlier_request_computed(client):
    # A system message no other test sends: the first request finds nothing cached.
    history = [{"role": "system", "content": f"Conversation {secrets.token_hex(8)}: answer briefly and kindly."}] + ASK
    hits_before = metric(client, "chatai_prefix_cache_hits_total")
    r = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    # The same conversation again, streamed: all of it but its last token comes from the cache.
    _, _, _, _, usage, _ = collect_stream(client.chat.completions.create(
        model=MODEL, messages=history, max_tokens=4, stream=True, stream_options={"include_usage": True}))
    cached = usage.prompt_tokens_details.cached_tokens
    assert usage.prompt_tokens == r.usage.prompt_tokens
    assert cached == usage.prompt_tokens - 1
    # The next turn reuses the first turn's whole prompt.
    history += [{"role": "assistant", "content": r.choices[0].message.content},
                {"role": "user", "content": "And tomorrow?"}]
    r2 = client.chat.completions.create(model=MODEL, messages=history, max_tokens=4)
    assert r2.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 8  # up to the reply's seam
    assert metric(client, "chatai_prefix_cache_hits_total") >= hits_before + cached
    assert 0 < metric(client, "chatai_prefix_cache_hit_rate") <= 1


def test_a_server_without_prefix_cache_reports_none_cached(build_dir, test_model):
    proc, c = start(build_dir, test_model, "--prefix-cache-tokens", "0")
    try:
        for _ in range(2):
            r = c.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
            assert r.usage.prompt_tokens_details.cached_tokens == 0
        assert metric(c, "chatai_prefix_cache_hits_total") == 0
    finally:
        stop_server(proc)


@pytest.mark.parametrize("extra,param", [
    ({"frobnicate": True}, "frobnicate"),
    ({"store": True}, "store"),
    ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, None),  # an empty object asks for nothing
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]}, "tool_choice"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"service_tier": "priority"}, "service_tier"),
])
def test_unsupported_fields_are_400s_naming_them(client, extra, param):
    if param is None:
        r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, extra_body=extra)
        assert r.choices
        return
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, extra_body=extra)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_image_parts_are_refused_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert e.value.body["param"] == "messages"
    assert "messages[0].content[1].type" in e.value.body["message"]
