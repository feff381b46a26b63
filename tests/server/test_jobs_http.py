"""Jobs over HTTP against a real ``bastion serve``: lifecycle, refusals, idempotency, long-poll, cancel,
signed webhooks to a real local receiver, and a SIGKILL mid-job followed by a restart that resumes it."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from bastion.server.jobs_routes import sign_webhook

from .server_process import ServerProcess, free_port, headers, metric

SECRET = "hook-secret"  # the shared server's --webhook-secret (conftest.py)
PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
SHORT = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0}
FINAL = {"finished", "failed", "aborted"}
STALL_S = 3.0  # how long the receiver's /stall path holds each job's first delivery


# ---------------------------------------------------------------------------------------------- helpers
def submit(url: str, endpoint: str, body: dict[str, Any], who: str = "alice", key: str | None = None,
           webhook_url: str | None = None) -> httpx.Response:
    """POST /v1/jobs with ``body`` for ``endpoint`` (and an Idempotency-Key / webhook when given)."""
    extra = {"Idempotency-Key": key} if key is not None else {}
    payload: dict[str, Any] = {"endpoint": endpoint, "body": body}
    if webhook_url is not None:
        payload["webhook_url"] = webhook_url
    return httpx.post(url + "/v1/jobs", json=payload, headers={**headers(who), **extra}, timeout=30)


def get_job(url: str, job_id: str, who: str = "alice") -> dict[str, Any]:
    """GET /v1/jobs/{id} (must answer 200)."""
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers(who), timeout=30)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def wait_result(url: str, job_id: str, who: str = "alice", wait: float = 60) -> dict[str, Any]:
    """Long-poll the job's result until it ends (must answer 200 with a final status)."""
    r = httpx.get(f"{url}/v1/jobs/{job_id}/result", params={"wait": wait}, headers=headers(who), timeout=wait + 30)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    assert job["status"] in FINAL, job
    return job


def job_ids(url: str, who: str = "alice") -> list[str]:
    """The ids GET /v1/jobs lists for ``who``'s tenant."""
    r = httpx.get(url + "/v1/jobs", params={"limit": 1000}, headers=headers(who), timeout=30)
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["data"]]


def direct(url: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The same body sent straight to its endpoint (must answer 200)."""
    r = httpx.post(url + endpoint, json=body, headers=headers("alice"), timeout=120)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def texts(result: dict[str, Any]) -> list[str]:
    """The choices' texts of a completion or chat response body."""
    return [c["text"] if "text" in c else c["message"]["content"] for c in result["choices"]]


def until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (that value), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(step)


def engine_idle(url: str) -> bool:
    """True when the engine runs nothing and holds no KV blocks (from /metrics)."""
    return metric(url, "vllm:num_requests_running") == 0 and metric(url, "vllm:kv_cache_usage_perc") == 0


def unreachable(url: str) -> bool:
    """True when nothing answers on ``url`` any more (a killed server is gone)."""
    try:
        httpx.get(url + "/health", timeout=2)
    except httpx.HTTPError:
        return True
    return False


# ---------------------------------------------------------------------------------------------- webhook receiver
@dataclass
class Delivery:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str = SECRET) -> dict[str, Any]:
        """The body as JSON, after checking its signature and timestamp (fails the test otherwise)."""
        timestamp = self.headers.get("x-bastion-timestamp")
        signature = self.headers.get("x-bastion-signature")
        assert timestamp is not None and signature is not None, self.headers
        assert abs(time.time() - int(timestamp)) < 300
        assert hmac.compare_digest(signature, sign_webhook(secret, timestamp, self.body))
        assert not hmac.compare_digest(signature, sign_webhook("wrong-secret", timestamp, self.body))
        assert not hmac.compare_digest(signature, sign_webhook(secret, timestamp, self.body + b" "))
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@dataclass
class Receiver:
    """A real HTTP server in a thread recording every POST: ``/flaky`` answers 503 to each job's first
    try, ``/stall`` answers it only after ``STALL_S`` seconds; every other path answers 200 at once."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, delivery: Delivery) -> int:
        """Keep ``delivery``; the status to answer it with (after stalling, on ``/stall``)."""
        with self.lock:
            tries = sum(1 for d in self.deliveries if d.path == delivery.path
                        and d.headers.get("x-bastion-job") == delivery.headers.get("x-bastion-job"))
            self.deliveries.append(delivery)
        if delivery.path == "/stall" and tries == 0:
            time.sleep(STALL_S)
        return 503 if delivery.path == "/flaky" and tries == 0 else 200

    def for_job(self, job_id: str) -> list[Delivery]:
        """The deliveries whose body is about ``job_id``."""
        with self.lock:
            return [d for d in self.deliveries if json.loads(d.body).get("id") == job_id]

    def wait_for(self, job_id: str, count: int = 1, timeout: float = 30) -> list[Delivery]:
        """At least ``count`` deliveries about ``job_id`` (fails after ``timeout`` seconds)."""
        found: list[Delivery] = until(lambda: (d := self.for_job(job_id)) and len(d) >= count and d,
                                      timeout, f"{count} webhook(s) for {job_id}")
        return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port."""
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = rec.record(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender is gone (killed while this delivery stalled)
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize(("endpoint", "body"), [
    ("/v1/completions", SHORT),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 16, "temperature": 0}),
])
def test_job_result_equals_the_direct_response(server: ServerProcess, endpoint: str, body: dict[str, Any]) -> None:
    r = submit(server.url, endpoint, body)
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["id"].startswith("job-") and created["object"] == "job" and created["endpoint"] == endpoint
    assert created["status"] in ("queued", "running") and created["attempts"] == 1 and created["error"] is None
    job_id = created["id"]
    seen = get_job(server.url, job_id)
    assert seen["id"] == job_id and seen["status"] in ("queued", "running", "finished")
    assert isinstance(seen["progress"]["output_tokens"], int)
    assert job_id in job_ids(server.url)
    # another tenant does not see it at all
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers("bob"), timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}/result", headers=headers("bob"), timeout=30).status_code == 404
    assert job_id not in job_ids(server.url, "bob")

    done = wait_result(server.url, job_id)
    assert done["status"] == "finished" and done["error"] is None, done
    want = direct(server.url, endpoint, body)
    got = done["result"]
    assert got is not None and got["object"] == want["object"] and got["model"] == want["model"]
    assert texts(got) == texts(want) and texts(got)[0]
    assert got["usage"] == want["usage"]
    assert [c["finish_reason"] for c in got["choices"]] == [c["finish_reason"] for c in want["choices"]]
    assert done["progress"]["output_tokens"] == got["usage"]["completion_tokens"]
    final = get_job(server.url, job_id)
    assert final["status"] == "finished" and final["progress"] == done["progress"]
    # cancelling a finished job leaves it as it is
    r = httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=headers("alice"), timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "finished"
    assert wait_result(server.url, job_id, wait=0)["result"] == got


@pytest.mark.parametrize(("endpoint", "body", "status", "param"), [
    ("/v1/chat/completions", {"max_tokens": 4}, 400, "body.messages"),
    ("/v1/completions", {"prompt": PROMPT, "temperature": 5}, 400, "body.temperature"),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 0}, 400, "body.max_tokens"),
    ("/v1/completions", {"prompt": PROMPT, "stream": True}, 400, "body.stream"),
    ("/v1/chat/completions", {"messages": CHAT, "stream": True}, 400, "body.stream"),
    ("/v1/embeddings", {"input": PROMPT}, 400, "endpoint"),
    ("/v1/completions", {"prompt": PROMPT, "model": "no-such-model"}, 404, "model"),
    ("/v1/completions", {"prompt": "hello " * 4000, "max_tokens": 4}, 413, None),
])
def test_bad_bodies_are_refused_and_create_no_job(server: ServerProcess, endpoint: str, body: dict[str, Any],
                                                  status: int, param: str | None) -> None:
    before = job_ids(server.url)
    r = submit(server.url, endpoint, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if param is not None:
        assert error["param"] == param and error["message"].startswith(param), error
    assert job_ids(server.url) == before


# ---------------------------------------------------------------------------------------------- idempotency
def test_idempotency_key(server: ServerProcess) -> None:
    key = f"key-{time.time_ns()}"
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    before = job_ids(server.url)
    first = submit(server.url, "/v1/completions", body, key=key)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    again = submit(server.url, "/v1/completions", body, key=key)
    assert again.status_code == 200 and again.json()["id"] == job_id, again.text
    assert job_ids(server.url) == [job_id, *before]  # one job for the two submits
    conflict = submit(server.url, "/v1/completions", {**body, "prompt": "Something else"}, key=key)
    assert conflict.status_code == 409 and conflict.json()["error"]["param"] == "Idempotency-Key", conflict.text
    chat = submit(server.url, "/v1/chat/completions", {"messages": CHAT, "max_tokens": 4}, key=key)
    assert chat.status_code == 409, chat.text
    assert job_ids(server.url) == [job_id, *before]
    # the same key from another tenant is another job
    other = submit(server.url, "/v1/completions", body, who="bob", key=key)
    assert other.status_code == 202 and other.json()["id"] != job_id, other.text
    assert other.json()["id"] in job_ids(server.url, "bob") and other.json()["id"] not in job_ids(server.url)
    # a retry after the job finished still answers the same job, with its result
    done = wait_result(server.url, job_id)
    late = submit(server.url, "/v1/completions", body, key=key)
    assert late.status_code == 200 and late.json()["id"] == job_id and late.json()["status"] == "finished"
    assert wait_result(server.url, job_id, wait=0)["result"] == done["result"]
    wait_result(server.url, other.json()["id"], who="bob")


# ---------------------------------------------------------------------------------------------- long-poll, cancel
def test_long_poll_then_cancel_frees_the_engine(server: ServerProcess, receiver: Receiver) -> None:
    until(lambda: engine_idle(server.url), 30, "the engine idle before the test")
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True, "temperature": 0}
    r = submit(server.url, "/v1/completions", body, webhook_url=receiver.url + "/stall")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    started = time.monotonic()
    polled = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"wait": 0.5}, headers=headers("alice"),
                       timeout=30)
    took = time.monotonic() - started
    assert polled.status_code == 202, polled.text
    assert 0.45 <= took < 3.0, took
    assert polled.json()["status"] == "running" and polled.json()["result"] is None
    running = until(lambda: (j := get_job(server.url, job_id))["progress"]["output_tokens"] > 0 and j, 10,
                    "progress.output_tokens > 0")
    assert running["status"] == "running"
    assert metric(server.url, "vllm:num_requests_running") == 1

    started = time.monotonic()
    r = httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=headers("alice"), timeout=30)
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert took < STALL_S / 2, f"DELETE waited {took:.1f} s, on the (stalling) webhook receiver"
    cancelled = r.json()
    assert cancelled["status"] == "aborted" and cancelled["error"] == "cancelled"
    assert 0 < cancelled["progress"]["output_tokens"] < 2000
    until(lambda: engine_idle(server.url), 2.0, "num_requests_running and kv_cache_usage_perc at 0")
    time.sleep(0.5)  # nothing runs on: the job's state is frozen
    later = wait_result(server.url, job_id, wait=0)
    assert later["status"] == "aborted" and later["result"] is None
    assert later["progress"] == cancelled["progress"] and later["updated_at"] == cancelled["updated_at"]
    assert engine_idle(server.url)
    # another tenant cannot cancel (nor see) it; an unknown id is a 404
    assert httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=headers("bob"), timeout=30).status_code == 404
    assert httpx.delete(f"{server.url}/v1/jobs/job-nope", headers=headers("alice"), timeout=30).status_code == 404
    # the cancelled job's webhook still came (the receiver held it STALL_S seconds), once, saying aborted
    [delivery] = receiver.wait_for(job_id)
    assert delivery.verified() == later


# ---------------------------------------------------------------------------------------------- webhooks
def test_webhook_is_signed_and_carries_the_result(server: ServerProcess, receiver: Receiver) -> None:
    r = submit(server.url, "/v1/completions", SHORT, webhook_url=receiver.url + "/hook")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    [delivery] = receiver.wait_for(job_id)
    assert delivery.path == "/hook" and delivery.headers["x-bastion-job"] == job_id
    assert delivery.headers["content-type"] == "application/json"
    payload = delivery.verified()
    stored = wait_result(server.url, job_id, wait=0)
    assert payload["status"] == "finished" and payload == stored
    assert texts(payload["result"]) == texts(direct(server.url, "/v1/completions", SHORT))
    time.sleep(0.3)
    assert len(receiver.for_job(job_id)) == 1  # delivered once


def test_webhook_is_retried_after_a_5xx(server: ServerProcess, receiver: Receiver) -> None:
    r = submit(server.url, "/v1/completions", {**SHORT, "max_tokens": 4}, webhook_url=receiver.url + "/flaky")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    first, second = receiver.wait_for(job_id, count=2)
    assert first.body == second.body and first.verified()["status"] == "finished"
    assert second.verified() == wait_result(server.url, job_id, wait=0)


# ---------------------------------------------------------------------------------------------- kill -9
def test_sigkill_mid_job_then_restart_resumes_it(tmp_path: Path, receiver: Receiver) -> None:
    store = tmp_path / "kill9-jobs.db"
    long_body = {"prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True, "temperature": 0}
    first = ServerProcess(tmp_path, "--webhook-secret", SECRET, job_store=store)
    second: ServerProcess | None = None
    try:
        first.wait_ready()
        r = submit(first.url, "/v1/completions", SHORT)
        assert r.status_code == 202, r.text
        short_id = r.json()["id"]
        short = wait_result(first.url, short_id)
        assert short["status"] == "finished"
        r = submit(first.url, "/v1/completions", long_body, webhook_url=receiver.url + "/resumed")
        assert r.status_code == 202, r.text
        long_id = r.json()["id"]
        until(lambda: get_job(first.url, long_id)["progress"]["output_tokens"] > 0, 30, "the long job's progress")
        first.kill9()
        assert unreachable(first.url)
        assert receiver.for_job(long_id) == []  # it had not finished

        second = ServerProcess(tmp_path, "--webhook-secret", SECRET, job_store=store)
        assert second.port != first.port
        second.wait_ready()
        # the finished job is there, unchanged
        assert wait_result(second.url, short_id, wait=0) == short
        # the interrupted one was run again from its stored body, and finishes
        resumed = get_job(second.url, long_id)
        assert resumed["attempts"] == 2, resumed
        assert resumed["status"] in ("queued", "running", "finished", "failed"), resumed
        done = wait_result(second.url, long_id)
        assert done["attempts"] == 2
        if done["status"] == "failed":  # allowed only with a reason
            assert done["error"], done
        else:
            assert done["status"] == "finished" and done["error"] is None, done
            assert done["result"]["usage"]["completion_tokens"] == 300
            assert done["progress"]["output_tokens"] == 300
            assert texts(done["result"]) == texts(direct(second.url, "/v1/completions", long_body))
        # its webhook still came, once, signed, after the resume
        [delivery] = receiver.wait_for(long_id)
        payload = delivery.verified()
        assert payload == wait_result(second.url, long_id, wait=0) and payload["attempts"] == 2
        ids = job_ids(second.url)
        assert ids.count(short_id) == 1 and ids.count(long_id) == 1
        assert all(get_job(second.url, i)["status"] in FINAL for i in ids)
    finally:
        if second is not None:
            second.stop()
        first.stop()


def test_webhook_in_flight_at_a_sigkill_is_delivered_after_the_restart(tmp_path: Path, receiver: Receiver) -> None:
    store = tmp_path / "undelivered-jobs.db"
    first = ServerProcess(tmp_path, "--webhook-secret", SECRET, job_store=store)
    second: ServerProcess | None = None
    try:
        first.wait_ready()
        r = submit(first.url, "/v1/completions", {**SHORT, "max_tokens": 4}, webhook_url=receiver.url + "/stall")
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        receiver.wait_for(job_id)  # the first delivery is being held by the receiver
        assert wait_result(first.url, job_id, wait=0)["status"] == "finished"
        first.kill9()
        second = ServerProcess(tmp_path, "--webhook-secret", SECRET, job_store=store).wait_ready()
        assert wait_result(second.url, job_id, wait=0)["status"] == "finished"
        deliveries = receiver.wait_for(job_id, count=2, timeout=STALL_S + 5)
        assert deliveries[-1].verified() == wait_result(second.url, job_id, wait=0)
    finally:
        if second is not None:
            second.stop()
        first.stop()
