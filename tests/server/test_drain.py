"""SIGTERM under load, against a real ``bastion serve`` process on loopback.

A drain stops taking work at once (readiness 503, new requests 503 with the OpenAI error body),
lets the requests in flight finish within ``--drain-timeout``, then the process exits by itself.
Requests that cannot finish in time are aborted at the deadline. Either way the audit trail holds
exactly one record per request, with the outcome that really happened, and its chain verifies.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bastion.audit.verify import verify

from .server_process import ServerProcess, headers, metric, poll

PROMPT = "Once upon a time"


@dataclass
class Stream:
    """One streamed completion as a client saw it: every event's data, how it ended."""

    request_id: str
    status: int | None = None
    events: list[str] = field(default_factory=list)
    error: BaseException | None = None  # the connection broke (httpx error) instead of ending cleanly
    first: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        """True when the stream ended with ``data: [DONE]``."""
        return bool(self.events) and self.events[-1] == "[DONE]"

    def chunks(self) -> list[dict[str, Any]]:
        """The JSON events (every one but ``[DONE]``)."""
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    def finish_reasons(self) -> list[str]:
        """Every non-null ``finish_reason`` the chunks carried."""
        return [c["finish_reason"] for chunk in self.chunks() for c in chunk.get("choices", ()) if c["finish_reason"]]

    def errors(self) -> list[dict[str, Any]]:
        """The error events (``{"error": {...}}``) sent after the 200."""
        return [chunk["error"] for chunk in self.chunks() if "error" in chunk]


def consume(url: str, body: dict[str, Any], stream: Stream) -> None:
    """POST a streamed completion as ``stream.request_id`` and read it to its end, recording each event."""
    try:
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True},
                          headers={**headers("alice"), "X-Request-Id": stream.request_id},
                          timeout=httpx.Timeout(120, connect=10)) as response:
            stream.status = response.status_code
            for line in response.iter_lines():
                if line.startswith("data: "):
                    stream.events.append(line.removeprefix("data: "))
                    stream.first.set()
    except httpx.HTTPError as e:
        stream.error = e
    finally:
        stream.ended.set()


def start_streams(url: str, body: dict[str, Any], ids: list[str]) -> tuple[list[Stream], list[threading.Thread]]:
    """One thread per request id, each consuming a streamed completion of ``body``."""
    streams = [Stream(rid) for rid in ids]
    threads = [threading.Thread(target=consume, args=(url, body, s), daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    return streams, threads


def wait_first_chunks(streams: list[Stream], proc: ServerProcess, timeout: float = 90.0) -> None:
    """Block until every stream has its first event (raise with the server's log otherwise)."""
    deadline = time.monotonic() + timeout
    for s in streams:
        if not s.first.wait(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"{s.request_id}: no first chunk in {timeout} s "
                                 f"(status {s.status}, error {s.error!r}):\n{proc.log()}")


def audit_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL audit trail, in order (after checking that its hash chain is intact)."""
    result = verify(path)
    assert result.ok, str(result)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_request(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Audit records grouped by their request id."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["request_id"], []).append(record)
    return grouped


def exit_status(proc: ServerProcess, timeout: float) -> int:
    """Wait for the server to exit by itself; its status (0, or -SIGTERM: uvicorn re-raises the signal it
    drained on once it has shut down cleanly)."""
    code = proc.proc.wait(timeout=timeout)
    assert code in (0, -signal.SIGTERM), f"exit status {code}:\n{proc.log()}"
    return code


def test_sigterm_lets_in_flight_streams_finish_and_refuses_new_work(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = ServerProcess(tmp_path, "--drain-timeout", "20", "--audit-path", str(audit), "--max-num-seqs", "16")
    try:
        proc.wait_ready()
        body = {"prompt": PROMPT, "max_tokens": 64, "ignore_eos": True, "temperature": 0,
                "stream_options": {"include_usage": True}}
        ids = [f"drain-{i}" for i in range(8)]
        streams, threads = start_streams(proc.url, body, ids)
        wait_first_chunks(streams, proc)
        assert not any(s.ended.is_set() for s in streams), "a stream ended before the signal: nothing to drain"

        proc.signal(signal.SIGTERM)
        # readiness says 503 at once, while the streams are still running
        assert poll(lambda: httpx.get(proc.url + "/ready", timeout=5).status_code == 503, timeout=3, interval=0.02), proc.log()
        ready = httpx.get(proc.url + "/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["reason"] == "the server is draining"
        assert not all(s.ended.is_set() for s in streams), "every stream ended before the drain was seen"
        # new work is refused with OpenAI's error body (the listener is still open: streams are in flight)
        try:
            late = httpx.post(proc.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4},
                              headers={**headers("alice"), "X-Request-Id": "drain-late"}, timeout=10)
        except httpx.ConnectError:
            late = None  # the listener closed already: also a refusal
        if late is not None:
            assert late.status_code == 503, late.text
            error = late.json()["error"]
            assert error["code"] == "draining" and error["type"] == "service_unavailable" and error["message"]
            assert set(error) == {"message", "type", "param", "code"}
            assert late.headers["retry-after"] and late.headers["x-request-id"] == "drain-late"

        for thread in threads:
            thread.join(timeout=60)
        for s in streams:
            assert s.error is None and s.status == 200, f"{s.request_id}: {s.error!r}\n{proc.log()}"
            assert s.done, f"{s.request_id}: no [DONE] (last event {s.events[-1:]})"
            assert s.finish_reasons() == ["length"] and not s.errors()
            assert s.chunks()[-1]["usage"]["completion_tokens"] == 64
        exit_status(proc, timeout=30)
        assert "drained (0 request(s) aborted at the deadline)" in proc.log()

        grouped = by_request(audit_records(audit))
        assert sorted(grouped) == sorted(ids)  # the refused request never reached the Gateway
        for rid in ids:
            [record] = grouped[rid]
            assert record["outcome"] == "served" and record["finish_reason"] == "length", record
            assert record["output_tokens"] == 64 and record["tenant"] == "acme"
    finally:
        proc.stop()


def test_drain_timeout_aborts_what_cannot_finish(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proc = ServerProcess(tmp_path, "--drain-timeout", "1", "--audit-path", str(audit), "--max-num-seqs", "16")
    try:
        proc.wait_ready()
        body = {"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": True, "temperature": 0}
        ids = [f"slow-{i}" for i in range(4)]
        streams, threads = start_streams(proc.url, body, ids)
        # and one request that is not streamed: its client waits for the whole body
        unary: dict[str, Any] = {}

        def post_unary() -> None:
            try:
                unary["response"] = httpx.post(proc.url + "/v1/completions", json=body, timeout=120,
                                               headers={**headers("alice"), "X-Request-Id": "slow-unary"})
            except httpx.HTTPError as e:
                unary["error"] = e

        unary_thread = threading.Thread(target=post_unary, daemon=True)
        unary_thread.start()
        wait_first_chunks(streams, proc)
        assert poll(lambda: metric(proc.url, "vllm:num_requests_running") == 5, timeout=30), proc.log()

        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        exit_status(proc, timeout=30)
        took = time.monotonic() - started
        # 1 s of drain, the aborts, the shutdown: a few seconds, not the minutes 4000 tokens would take
        assert took < 8.0, f"exit took {took:.1f} s:\n{proc.log()}"
        assert "drained (5 request(s) aborted at the deadline)" in proc.log()

        for thread in [*threads, unary_thread]:
            thread.join(timeout=10)
            assert not thread.is_alive()
        for s in streams:
            # the stream ends: an error event then [DONE], or the connection closes; never a normal finish
            assert s.status == 200 and s.ended.is_set()
            assert "length" not in s.finish_reasons() and "stop" not in s.finish_reasons()
            assert s.error is not None or s.errors(), f"{s.request_id}: ended cleanly? {s.events[-2:]}"
        # the request that was not streamed gets its answer: a 503 in OpenAI's shape, retry elsewhere
        late = unary["response"]
        assert late.status_code == 503 and late.headers["retry-after"], late.text
        assert late.json()["error"]["code"] == "draining" and late.headers["x-request-id"] == "slow-unary"

        grouped = by_request(audit_records(audit))
        assert sorted(grouped) == sorted([*ids, "slow-unary"]), "an audit record is missing or extra"
        for records in grouped.values():
            [record] = records
            assert record["outcome"] == "aborted", record
            assert 0 < record["output_tokens"] < 4000
    finally:
        proc.stop()
