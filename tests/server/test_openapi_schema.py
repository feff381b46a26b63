"""Schemathesis over the service's own OpenAPI document, against a real ``bastion serve`` on loopback.

Every operation gets generated requests (valid and invalid ones): none may answer a 5xx, every
answer must match what the document promises (status, content type, headers, body schema, each
server-sent event), and a request the document calls invalid must be refused. The cost is bounded
by a small context (``--max-model-len 40``: a generation is at most a dozen or so tokens), few
examples per operation and no shrinking; examples are derandomized, so a run is reproducible.

Not checked: ``positive_data_acceptance`` (every schema-valid request must succeed). The API has
rules across fields and against the model that a JSON schema cannot state (``min_tokens`` above
``max_tokens``, ``echo`` with ``logprobs``, a prompt longer than the context is 413, an empty
prompt has no tokens), so valid-looking requests are rightly refused with a 400/413.

The last tests pin what the fuzzing found, so they stay fixed whatever the examples drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from .server_process import KEYS, ServerProcess

MAX_EXAMPLES = 20


def admin() -> dict[str, str]:
    """The admin key's Authorization header (the admin scope covers every route)."""
    return {"Authorization": f"Bearer {KEYS['admin']}"}


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A dedicated server with a tiny context, so generated generation requests stay cheap."""
    tmp: Path = tmp_path_factory.mktemp("schema")
    proc = ServerProcess(tmp, "--max-model-len", "40", "--max-n", "2", "--max-num-seqs", "16",
                         "--audit-path", str(tmp / "audit.jsonl"))
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api_schema(schema_server: ServerProcess) -> schemathesis.BaseSchema:
    """The document the server publishes, loaded over HTTP (requests go to the same server)."""
    schema = schemathesis.openapi.from_url(schema_server.url + "/openapi.json", timeout=30)
    schema.config.update(base_url=schema_server.url)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck),
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
def test_no_server_error_and_every_answer_matches_the_schema(case: schemathesis.Case) -> None:
    """No generated request gets a 5xx or an answer the document does not describe."""
    case.call_and_validate(headers=admin(), timeout=60, excluded_checks=[positive_data_acceptance])


def test_405_names_every_method_of_the_path(schema_server: ServerProcess) -> None:
    """RFC 9110: a 405 lists what the resource supports (Starlette named only the first route's methods)."""
    for method, path, allowed in (("PUT", "/v1/jobs", {"GET", "POST"}), ("POST", "/v1/jobs/job-x", {"GET", "DELETE"}),
                                  ("GET", "/v1/completions", {"POST"})):
        response = httpx.request(method, schema_server.url + path, headers=admin(), timeout=30)
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == allowed, (method, path)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("field", ["top_p", "repetition_penalty"])
def test_a_value_that_vanishes_in_float32_is_a_400(schema_server: ServerProcess, field: str) -> None:
    """5e-324 is above 0 but 0 in float32: it reached the engine and failed there (a 503; a top_p of it
    failed the whole step, so every request batched with it)."""
    response = httpx.post(schema_server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, field: 5e-324},
                          headers=admin(), timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text


@pytest.mark.parametrize(("field", "value"), [("max_tokens", "2"), ("echo", 1), ("temperature", "0.5"),
                                              ("top_k", 2.5), ("ignore_eos", "true")])
def test_json_types_are_not_coerced(schema_server: ServerProcess, field: str, value: object) -> None:
    """A value of another JSON type than the document says is a 400 naming the field, as OpenAI answers."""
    body = {"prompt": "Hi", "max_tokens": 2, field: value}
    response = httpx.post(schema_server.url + "/v1/completions", json=body, headers=admin(), timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text


def test_an_integral_number_is_an_integer(schema_server: ServerProcess) -> None:
    """JSON Schema's integer takes ``2.0``; so does the server (strict typing must not refuse it)."""
    body = {"prompt": "Hi", "max_tokens": 2.0, "top_k": 1.0, "ignore_eos": True, "temperature": 0}
    response = httpx.post(schema_server.url + "/v1/completions", json=body, headers=admin(), timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 2, response.text
