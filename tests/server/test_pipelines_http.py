"""Pipelines over HTTP: a YAML pipeline served by ``bastion serve --pipelines``, run through the Gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .server_process import ServerProcess, headers

PIPELINE = """
name: brief
steps:
  - name: topic
    kind: model
    prompt: "Question: {question}\\nOne-word topic:"
    params: {max_tokens: 4, temperature: 0}
  - name: answer
    kind: model
    messages: [{role: user, content: "Answer briefly ({topic}): {question}"}]
    params: {max_tokens: 12, temperature: 0}
edges:
  - {from: topic, to: answer}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    tmp = tmp_path_factory.mktemp("pipelines")
    (tmp / "brief.yaml").write_text(PIPELINE)
    trail = tmp / "audit.jsonl"
    proc = ServerProcess(tmp, "--pipelines", str(tmp / "brief.yaml"), "--audit-path", str(trail))
    try:
        yield proc.wait_ready(), trail
    finally:
        proc.stop()


def test_a_run_answers_every_steps_result_and_is_audited(served: tuple[ServerProcess, Path]) -> None:
    proc, trail = served
    assert httpx.get(proc.url + "/v1/pipelines", headers=headers("alice")).json()["data"] == ["brief"]
    response = httpx.post(proc.url + "/v1/pipelines/brief/runs", headers={**headers("alice"), "X-Request-Id": "run-1"},
                          json={"inputs": {"question": "What is the capital of France?"}}, timeout=120)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "completed", run
    steps = {s["name"]: s for s in run["steps"]} if isinstance(run["steps"], list) else run["steps"]
    assert set(steps) == {"topic", "answer"} and all(s["status"] in ("ok", "cached") for s in steps.values())
    records = [json.loads(line) for line in trail.read_text().splitlines()]
    mine = [r for r in records if "run-1" in json.dumps(r.get("metadata", {})) or r.get("request_id") == "run-1"]
    assert len(mine) >= 3  # one per model step and one for the run, all linked to the run id


def test_unknown_pipeline_and_bad_inputs(served: tuple[ServerProcess, Path]) -> None:
    proc, _ = served
    missing = httpx.post(proc.url + "/v1/pipelines/nope/runs", headers=headers("alice"), json={"inputs": {}})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "pipeline_not_found"
    extra = httpx.post(proc.url + "/v1/pipelines/brief/runs", headers=headers("alice"), json={"input": {}})
    assert extra.status_code == 400
    assert httpx.post(proc.url + "/v1/pipelines/brief/runs", json={"inputs": {}}).status_code == 401
