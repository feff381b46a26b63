"""OpenAIBackend against a real loopback HTTP server: SSE streaming, error mapping, failover."""

from __future__ import annotations

import socket

import pytest
from bastion.gateway import (
    BackendRequest,
    BackendTimeout,
    BackendUnavailable,
    ContextWindowExceeded,
    Gateway,
    MalformedResponse,
    OpenAIBackend,
    RetryPolicy,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT, ScriptedBackend
from .gateway_helpers import read_records
from .openai_server import OpenAIServer

PARAMS = SamplingParams(max_tokens=64, temperature=0.5, stop=["END"])
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


async def _collect(backend, request):
    return [c async for c in backend.stream(request)]


async def test_chat_stream_over_sse(server):
    backend = OpenAIBackend(server.base_url, "ok", api_key="sk-test")
    chunks = await _collect(backend, BackendRequest("r1", PARAMS, messages=CHAT))
    assert "".join(c.text for c in chunks) == SCRIPT
    assert chunks[-1].finish_reason == "stop" and chunks[-1].prompt_tokens == 7
    assert sum(c.num_tokens for c in chunks) == len(SCRIPT.split())
    sent = server.received[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["stream"] is True and sent["body"]["stop"] == ["END"]
    assert sent["body"]["temperature"] == 0.5 and sent["body"]["max_tokens"] == 64
    await backend.aclose()


async def test_completions_stream_with_continuation(server):
    backend = OpenAIBackend(server.base_url, "ok")
    request = BackendRequest("r1", PARAMS, prompt="q|", continuation="The quick brown")
    chunks = await _collect(backend, request)
    assert "".join(c.text for c in chunks) == SCRIPT[len("The quick brown"):]
    assert server.received[0]["body"]["prompt"] == "q|The quick brown"
    await backend.aclose()


@pytest.mark.parametrize("mode,error", [
    ("http-429", UpstreamRateLimited), ("http-500", UpstreamServerError), ("http-401", UpstreamAuthError),
    ("context", ContextWindowExceeded), ("malformed", MalformedResponse), ("cut", BackendUnavailable),
    ("error-event", UpstreamServerError),
])
async def test_failures_map_to_error_classes(server, mode, error):
    backend = OpenAIBackend(server.base_url, mode)
    with pytest.raises(error) as info:
        await _collect(backend, BackendRequest("r1", PARAMS, messages=CHAT))
    if mode == "http-429":
        assert info.value.retry_after == 2.0
    await backend.aclose()


async def test_read_timeout_and_refused_connection(server):
    slow = OpenAIBackend(server.base_url, "slow", timeout=0.1)
    with pytest.raises(BackendTimeout):
        await _collect(slow, BackendRequest("r1", PARAMS, messages=CHAT))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "ok", timeout=1.0)
    with pytest.raises(BackendUnavailable):
        await _collect(dead, BackendRequest("r2", PARAMS, messages=CHAT))
    await slow.aclose()
    await dead.aclose()


def test_constructor_names_bad_arguments():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIBackend("localhost:8000", "m")
    with pytest.raises(ValueError, match="timeout"):
        OpenAIBackend("http://x", "m", timeout=0)


async def test_local_failure_mid_stream_continues_on_remote_chat(server, audit_log, audit_path):
    local = ScriptedBackend("local", fail_after=4, fail_exc=RuntimeError("engine fault"))
    remote = OpenAIBackend(server.base_url, "ok")
    gw = Gateway({"local": local, "remote": remote}, audit=audit_log, retry_policy=RetryPolicy(retries={}))
    deltas = [d async for d in gw.stream(CHAT, PARAMS)]
    assert "".join(d.text for d in deltas) == SCRIPT
    body = server.received[0]["body"]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "The quick brown fox"}
    assert body["max_tokens"] == PARAMS.max_tokens - 4
    rec = read_records(audit_path)[0]
    assert rec["outcome"] == "fallback" and rec["backend"] == "remote" and rec["fallback_at_token"] == 4
    await remote.aclose()


async def test_remote_cut_stream_falls_back_to_second_remote(server, audit_log):
    first, second = OpenAIBackend(server.base_url, "cut"), OpenAIBackend(server.base_url, "ok")
    gw = Gateway([first, second], audit=audit_log, retry_policy=RetryPolicy(retries={}))
    result = await gw.generate(CHAT, PARAMS)
    assert result.text == SCRIPT and result.backend == "1" and result.prompt_tokens == 7
    await first.aclose()
    await second.aclose()


@pytest.mark.parametrize(("constraint", "expected"), [
    ({"json": {"type": "object", "properties": {"a": {"type": "integer"}}}},
     {"response_format": {"type": "json_schema", "json_schema": {
         "name": "response", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}, "strict": True}}}),
    ({"json_object": True}, {"response_format": {"type": "json_object"}}),
    ({"regex": "[0-9]+"}, {"structured_outputs": {"regex": "[0-9]+"}}),
    ({"choice": ["yes", "no"]}, {"structured_outputs": {"choice": ["yes", "no"]}}),
    ({"grammar": 'start: "a"'}, {"structured_outputs": {"grammar": 'start: "a"'}}),
], ids=["json", "json_object", "regex", "choice", "grammar"])
async def test_structured_outputs_go_upstream_as_response_format_or_vllms_field(server, constraint, expected):
    backend = OpenAIBackend(server.base_url, "ok")
    params = SamplingParams(max_tokens=8, structured_outputs=constraint)
    for request in (BackendRequest("r1", params, messages=CHAT), BackendRequest("r2", params, prompt="q")):
        await _collect(backend, request)
    for sent in server.received:
        assert {k: sent["body"][k] for k in expected} == expected
        assert not {"response_format", "structured_outputs"} - set(expected) & set(sent["body"])
    await backend.aclose()
