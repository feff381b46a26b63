"""Structured outputs and tool calls over HTTP, through the official openai client, on the real model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from .server_process import KEYS, ServerProcess, headers

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Rome"]},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                   "required": ["city"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                         "country": {"type": "string", "enum": ["France", "Italy", "Spain"]},
                                         "capital": {"type": "boolean"}},
        "required": ["name", "country", "capital"], "additionalProperties": False}


def client(server: ServerProcess) -> tuple[openai.OpenAI, str]:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS["alice"], max_retries=0, timeout=120)
    return c, c.models.list().data[0].id


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_response_is_valid_by_construction(server: ServerProcess, temperature: float) -> None:
    c, model = client(server)
    out = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Describe Paris as JSON."}], max_tokens=80,
        temperature=temperature, seed=5,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}})
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema.validate(json.loads(choice.message.content), CITY)


def test_json_object_and_vllm_structured_outputs(server: ServerProcess) -> None:
    c, model = client(server)
    obj = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "A JSON object, please."}],
                                    max_tokens=60, temperature=0, response_format={"type": "json_object"})
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    else:  # the grammar could not finish in 60 tokens: it says so
        assert obj.choices[0].finish_reason == "length" and obj.choices[0].message.content.startswith("{")
    picked = c.completions.create(model=model, prompt="The best fruit is", max_tokens=8, temperature=0,
                                  extra_body={"structured_outputs": {"choice": ["apple", "banana", "cherry"]}})
    assert picked.choices[0].text in ("apple", "banana", "cherry")
    digits = c.completions.create(model=model, prompt="A phone number:", max_tokens=20, temperature=0,
                                  extra_body={"structured_outputs": {"regex": r"[0-9]{3}-[0-9]{4}"}})
    assert len(digits.choices[0].text) == 8 and digits.choices[0].text[3] == "-"


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_call_round_trip(server: ServerProcess, tool_choice: object) -> None:
    c, model = client(server)
    out = c.chat.completions.create(model=model, messages=ASK, tools=[WEATHER, TIME], tool_choice=tool_choice,
                                    max_tokens=80, temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    if isinstance(tool_choice, dict):
        assert {c_.function.name for c_ in choice.message.tool_calls} == {"get_weather"}
    tool = next(t for t in (WEATHER, TIME) if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    # the result goes back as a tool message; the model answers in text
    follow = c.chat.completions.create(model=model, tools=[WEATHER, TIME], tool_choice="none", max_tokens=30,
                                       temperature=0, messages=[*ASK, choice.message.model_dump(exclude_none=True),
                                                                {"role": "tool", "tool_call_id": call.id,
                                                                 "content": '{"temperature": 18}'}])
    assert follow.choices[0].message.tool_calls is None and follow.choices[0].message.content


def test_streamed_tool_call_equals_the_whole_one(server: ServerProcess) -> None:
    c, model = client(server)
    kwargs = {"model": model, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 80,
              "temperature": 0}
    whole = c.chat.completions.create(**kwargs).choices[0]
    chunks = list(c.chat.completions.create(**kwargs, stream=True))
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert [(tc.function.name, tc.function.arguments) for tc in calls] == \
        [(tc.function.name, tc.function.arguments) for tc in whole.message.tool_calls]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == \
        ["tool_calls"]


def test_auto_tool_choice_answers_or_calls(server: ServerProcess) -> None:
    c, model = client(server)
    out = c.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], max_tokens=80, temperature=0)
    message = out.choices[0].message
    assert (message.tool_calls is None) != (message.content is None)
    if message.tool_calls:
        assert out.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "structured_outputs"),
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
    ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "structured_outputs"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
def test_bad_constraints_are_400_naming_the_field(server: ServerProcess, body: dict, param: str) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", headers=headers("alice"), timeout=60,
                          json={"messages": ASK, "max_tokens": 8, **body})
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["param"] or "").startswith(param), response.json()
