"""Rate limits, overload and deadlines over HTTP: 429 with Retry-After, 504, as the openai client's exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from .server_process import KEYS, ServerProcess, headers

BODY = {"prompt": "Count to ten:", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Three requests a minute per tenant."""
    proc = ServerProcess(tmp_path_factory.mktemp("limited"), "--requests-per-minute", "3")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One running sequence, one queued request, half a second per request."""
    proc = ServerProcess(tmp_path_factory.mktemp("strict"), "--max-num-seqs", "1", "--max-queued-requests", "1",
                         "--request-timeout", "0.5")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def test_rate_limit_is_429_with_retry_after_per_tenant(limited: ServerProcess) -> None:
    codes = [httpx.post(limited.url + "/v1/completions", json=BODY, headers=headers("alice"), timeout=60)
             for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    refused = codes[3]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # another tenant has its own bucket
    assert httpx.post(limited.url + "/v1/completions", json=BODY, headers=headers("bob"), timeout=60).status_code == 200
    client = openai.OpenAI(base_url=limited.url + "/v1", api_key=KEYS["alice"], max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model=client.models.list().data[0].id, prompt="x", max_tokens=1)


def test_deadline_is_504(strict: ServerProcess) -> None:
    body = {"prompt": "Tell a long story:", "max_tokens": 2000, "ignore_eos": True, "temperature": 0}
    response = httpx.post(strict.url + "/v1/completions", json=body, headers=headers("alice"), timeout=60)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_overload_is_429(strict: ServerProcess) -> None:
    body = {"prompt": "Hi", "max_tokens": 200, "ignore_eos": True, "temperature": 0}

    def post(_: int) -> int:
        return httpx.post(strict.url + "/v1/completions", json=body, headers=headers("bob"), timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(8)))
    assert 429 in codes, codes
    assert set(codes) <= {429, 504}, codes  # the others ran into the half-second deadline


def test_bad_json_and_wrong_types_are_400(strict: ServerProcess, tmp_path: Path) -> None:
    h = {**headers("alice"), "Content-Type": "application/json"}
    broken = httpx.post(strict.url + "/v1/completions", content=b'{"prompt": ', headers=h)
    assert broken.status_code == 400
    wrong = httpx.post(strict.url + "/v1/chat/completions", json={"messages": "hello"}, headers=h)
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "messages"
    role = httpx.post(strict.url + "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]},
                      headers=h)
    assert role.status_code == 400 and role.json()["error"]["param"].startswith("messages.0.role")
