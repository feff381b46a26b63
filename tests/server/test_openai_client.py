"""The official ``openai`` client, sync and async, against a real ``bastion serve`` on loopback."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from .server_process import KEYS, ServerProcess

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def client(server: ServerProcess, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[who], max_retries=0, timeout=120)


def model_id(server: ServerProcess) -> str:
    return client(server).models.list().data[0].id


def test_models_lists_the_served_model(server: ServerProcess) -> None:
    models = client(server).models.list().data
    assert len(models) == 1 and models[0].id.startswith("SmolLM2-135M-Instruct")


def test_streamed_completion_equals_non_streamed_and_usage_is_exact(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    whole = c.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    chunks = list(c.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
                                       stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert streamed == whole.choices[0].text and streamed
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    prompt_ids = httpx.post(server.url + "/tokenize", json={"prompt": PROMPT},
                            headers={"Authorization": f"Bearer {KEYS['alice']}"}).json()["tokens"]
    assert whole.usage.prompt_tokens == len(prompt_ids)
    # the completion's tokens, re-encoded, are as many as the usage says (greedy, no stop string cut)
    assert whole.usage.completion_tokens == 12 if whole.choices[0].finish_reason == "length" else True
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_streamed_chat_equals_non_streamed(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    whole = c.chat.completions.create(model=model, messages=CHAT, max_tokens=20, temperature=0)
    assert "Paris" in whole.choices[0].message.content
    chunks = list(c.chat.completions.create(model=model, messages=CHAT, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == whole.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage == whole.usage


def test_n_choices_each_finish_once(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    out = c.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0.9, seed=7, n=2)
    assert sorted(ch.index for ch in out.choices) == [0, 1]
    assert all(ch.finish_reason in ("stop", "length") for ch in out.choices)
    # different seeds per choice: the usage sums both choices' tokens
    assert out.usage.completion_tokens <= 16
    chunks = list(c.chat.completions.create(model=model, messages=CHAT, max_tokens=8, n=2, stream=True,
                                            temperature=0.9, seed=3))
    finishes = [(ch.choices[0].index, ch.choices[0].finish_reason) for ch in chunks
                if ch.choices and len(ch.choices) == 1 and ch.choices[0].finish_reason]
    assert sorted(i for i, _ in finishes) == [0, 1]


def test_seed_makes_sampling_reproducible(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    a = c.completions.create(model=model, prompt=PROMPT, max_tokens=10, temperature=1.0, seed=1234)
    b = c.completions.create(model=model, prompt=PROMPT, max_tokens=10, temperature=1.0, seed=1234)
    assert a.choices[0].text == b.choices[0].text


def test_logprob_list_sizes(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    out = c.completions.create(model=model, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = out.choices[0].logprobs
    n = out.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert all(len(top) == 3 for top in lp.top_logprobs)
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    chat = c.chat.completions.create(model=model, messages=CHAT, max_tokens=6, temperature=0, logprobs=True,
                                     top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy: the top token
    streamed = [ch.choices[0].logprobs for ch in c.completions.create(
        model=model, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3, stream=True) if ch.choices]
    tokens = [t for lp_ in streamed if lp_ is not None for t in lp_.tokens]
    assert tokens == lp.tokens


def test_vllm_extras_are_honoured(server: ServerProcess) -> None:
    c, model = client(server), model_id(server)
    out = c.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0,
                               extra_body={"ignore_eos": True, "min_tokens": 5, "top_k": 1, "priority": 0})
    assert out.usage.completion_tokens == 5 and out.choices[0].finish_reason == "length"
    stopped = c.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0, stop=["."])
    assert "." not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"temperature": -1}, openai.BadRequestError),
    ({"max_tokens": 0}, openai.BadRequestError),
    ({"top_p": 0}, openai.BadRequestError),
    ({"model": "no-such-model"}, openai.NotFoundError),
    ({"extra_body": {"min_tokens": 50}, "max_tokens": 5}, openai.BadRequestError),
])
def test_errors_surface_as_the_clients_own_exceptions(server: ServerProcess, kwargs: dict, error: type) -> None:
    c = client(server)
    kwargs = {"model": model_id(server), "prompt": PROMPT, "max_tokens": 4, **kwargs}
    with pytest.raises(error) as info:
        c.completions.create(**kwargs)
    body = info.value.body
    assert isinstance(body, dict) and body["message"] and body["type"]
    if error is openai.BadRequestError:
        assert body["param"] in ("temperature", "max_tokens", "top_p", "min_tokens")


def test_auth_errors_are_the_clients_exceptions(server: ServerProcess) -> None:
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key-0123456789", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.PermissionDeniedError):
        client(server, "jobs_only").completions.create(model=model_id(server), prompt=PROMPT, max_tokens=2)


def test_prompt_longer_than_the_context_is_413_before_work(server: ServerProcess) -> None:
    c = client(server)
    with pytest.raises(openai.APIStatusError) as info:
        c.completions.create(model=model_id(server), prompt="word " * 9000, max_tokens=2)
    assert info.value.status_code == 413 and info.value.body["param"] == "prompt"


async def test_async_client_concurrent_streams(server: ServerProcess) -> None:
    c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEYS["bob"], max_retries=0, timeout=120)
    model = (await c.models.list()).data[0].id

    async def one(i: int) -> tuple[str, str]:
        stream = await c.completions.create(model=model, prompt=f"{i} plus {i} is", max_tokens=8, temperature=0,
                                            stream=True)
        streamed = "".join([ch.choices[0].text async for ch in stream if ch.choices])
        whole = await c.completions.create(model=model, prompt=f"{i} plus {i} is", max_tokens=8, temperature=0)
        return streamed, whole.choices[0].text

    pairs = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(a == b for a, b in pairs)
    await c.close()


def test_request_id_is_echoed_and_generated(server: ServerProcess) -> None:
    h = {"Authorization": f"Bearer {KEYS['alice']}"}
    given = httpx.get(server.url + "/v1/models", headers={**h, "X-Request-Id": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = httpx.get(server.url + "/v1/models", headers=h)
    assert len(made.headers["x-request-id"]) == 32
    junk = httpx.get(server.url + "/v1/models", headers={**h, "X-Request-Id": "bad id\twith spaces"})
    assert junk.headers["x-request-id"] != "bad id\twith spaces"


def test_bodies_over_the_limit_are_413_declared_or_chunked(server: ServerProcess) -> None:
    h = {"Authorization": f"Bearer {KEYS['alice']}", "Content-Type": "application/json"}
    big = b'{"prompt": "' + b"x" * (5 * 1024 * 1024) + b'", "max_tokens": 1}'
    declared = httpx.post(server.url + "/v1/completions", content=big, headers=h, timeout=60)
    assert declared.status_code == 413 and declared.json()["error"]["message"].startswith("body")

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    chunked = httpx.post(server.url + "/v1/completions", content=chunks(), headers=h, timeout=60)
    assert chunked.status_code == 413 and "limit" in chunked.json()["error"]["message"]
