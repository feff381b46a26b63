"""Several models in one ``bastion serve`` process (``--models NAME=PATH``): each its own engine and KV
pool, steps sharing the cores; ``/v1/models`` lists them all and a request's ``model`` picks one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .server_process import ServerProcess, headers


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    tmp = tmp_path_factory.mktemp("multi")
    trail = tmp / "audit.jsonl"
    proc = ServerProcess(tmp, "--served-model-name", "generator", "--models", f"classifier={smollm2_path}",
                         "--audit-path", str(trail))
    try:
        yield proc.wait_ready(), trail
    finally:
        proc.stop()


def _complete(url: str, model: str | None, prompt: str) -> httpx.Response:
    body: dict = {"prompt": prompt, "max_tokens": 6, "temperature": 0}
    if model is not None:
        body["model"] = model
    return httpx.post(url + "/v1/completions", json=body, headers=headers("alice"), timeout=120)


def test_models_lists_every_model(two_models) -> None:
    server, _ = two_models
    data = httpx.get(server.url + "/v1/models", headers=headers("alice"), timeout=10).json()["data"]
    assert [m["id"] for m in data] == ["generator", "classifier"]
    assert all(m["max_model_len"] > 0 for m in data)


def test_each_model_answers_on_its_own_engine(two_models) -> None:
    server, trail = two_models
    prompts = [f"Fact number {i}:" for i in range(6)]
    with ThreadPoolExecutor(12) as pool:  # both models at once
        jobs = [pool.submit(_complete, server.url, model, p) for p in prompts for model in ("generator", "classifier")]
        responses = [j.result() for j in jobs]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert sorted({r.json()["model"] for r in responses}) == ["classifier", "generator"]
    # same weights in both engines: greedy answers agree, each engine ran its own requests
    by_prompt: dict[str, set[str]] = {}
    for (p, _model), r in zip(((p, m) for p in prompts for m in ("generator", "classifier")), responses, strict=True):
        by_prompt.setdefault(p, set()).add(r.json()["choices"][0]["text"])
    assert all(len(texts) == 1 for texts in by_prompt.values()), by_prompt
    default = _complete(server.url, None, "Hello")
    assert default.status_code == 200 and default.json()["model"] == "generator"
    records = [json.loads(line) for line in trail.read_text().splitlines() if line.strip()]
    backends = [r["backend"] for r in records]
    assert backends.count("classifier") >= 6 and backends.count("local") >= 7, backends
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'vllm:generation_tokens_total{model_name="classifier"}' in metrics


def test_an_unknown_model_is_a_404_naming_the_served_ones(two_models) -> None:
    server, _ = two_models
    r = _complete(server.url, "summarizer", "Hi")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["param"] == "model" and "classifier" in err["message"] and "generator" in err["message"]


def test_a_bad_models_flag_stops_the_command(tmp_path: Path, smollm2_path: Path) -> None:
    for flag, needle in ((f"classifier{smollm2_path}", "NAME=PATH"), ("c=/no/such/model.gguf", "models: c"),
                         (f"local={smollm2_path}", "'local'")):
        proc = ServerProcess(tmp_path, "--models", flag)
        assert proc.proc.wait(timeout=60) == 2
        log = proc.log()
        proc.stop()
        assert needle in log, log
