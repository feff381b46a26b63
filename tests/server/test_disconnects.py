"""Clients that hang up, against a real ``bastion serve`` on loopback: every KV block comes back.

200 concurrent streamed completions on a server running at most 64 sequences: a seeded random half
of the clients leave early (after some chunks, or before the answer even starts, while queued).
Afterwards the engine holds nothing (``vllm:kv_cache_usage_perc`` 0, nothing running or waiting),
the audit trail has one record per request, and the server still answers. A client whose
non-streamed request times out gets its engine request aborted within a couple of seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from .server_process import ServerProcess, headers, metric, poll

N_CLIENTS = 200
MAX_TOKENS = 24
SEED = 20261204


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A dedicated server (its metrics are this module's alone) with an audit trail, 64 sequences at most."""
    tmp = tmp_path_factory.mktemp("disconnects")
    proc = ServerProcess(tmp, "--max-num-seqs", "64", "--audit-path", str(tmp / "audit.jsonl"))
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@dataclass
class Client:
    """One client's plan (when to hang up) and what it saw."""

    request_id: str
    leave_after: int | None = None  # chunks to read before hanging up; None: read to the end
    leave_before_s: float | None = None  # hang up after this long, before the answer starts
    events: list[str] = field(default_factory=list)
    left: bool = False
    status: int | None = None


def plan_clients(rng: random.Random) -> list[Client]:
    """About half the clients leave: most after a random number of chunks, some while still queued."""
    clients = []
    for i in range(N_CLIENTS):
        client = Client(f"disc-{i}")
        if rng.random() < 0.5:
            if rng.random() < 0.25:
                client.leave_before_s = rng.uniform(0.05, 1.5)
            else:
                client.leave_after = rng.randint(0, MAX_TOKENS - 2)
        clients.append(client)
    return clients


async def run_client(http: httpx.AsyncClient, client: Client, index: int) -> None:
    """Stream one completion, hanging up as ``client`` plans (closing the connection mid-answer)."""
    body = {"prompt": f"Story number {index}:", "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True,
            "temperature": 0.8, "seed": index, "stream_options": {"include_usage": True}}

    async def exchange() -> None:
        async with http.stream("POST", "/v1/completions", json=body,
                               headers={"X-Request-Id": client.request_id}) as response:
            client.status = response.status_code
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if client.leave_after is not None and len(client.events) >= client.leave_after:
                    client.left = True
                    return  # leaving the block closes the unread response: the connection goes
                client.events.append(line.removeprefix("data: "))

    if client.leave_before_s is None:
        await exchange()
        return
    try:
        await asyncio.wait_for(exchange(), timeout=client.leave_before_s)
    except TimeoutError:
        client.left = True


def audit_file(proc: ServerProcess) -> Path:
    """The audit trail of ``busy_server`` (next to its log)."""
    return proc.log_path.parent / "audit.jsonl"


async def kv_usage(http: httpx.AsyncClient) -> float:
    """``vllm:kv_cache_usage_perc`` read through ``http``."""
    text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(("vllm:kv_cache_usage_perc{", "vllm:kv_cache_usage_perc ")))


def engine_idle(url: str) -> bool:
    """True when the engine holds no KV block and runs or queues no request."""
    return (metric(url, "vllm:kv_cache_usage_perc") == 0 and metric(url, "vllm:num_requests_running") == 0
            and metric(url, "vllm:num_requests_waiting") == 0)


def audit_by_request(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The audit records written so far, grouped by request id."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                grouped.setdefault(record["request_id"], []).append(record)
    return grouped


def complete(url: str) -> dict[str, Any]:
    """A small greedy completion (the server still serves)."""
    response = httpx.post(url + "/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 6,
                                                         "ignore_eos": True, "temperature": 0},
                          headers=headers("alice"), timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_clients_hanging_up_mid_stream_free_every_kv_block(busy_server: ServerProcess) -> None:
    clients = plan_clients(random.Random(SEED))
    leavers = [c for c in clients if c.leave_after is not None or c.leave_before_s is not None]
    assert 0.35 * N_CLIENTS < len(leavers) < 0.65 * N_CLIENTS
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=busy_server.url, headers=headers("alice"), limits=limits,
                                 timeout=httpx.Timeout(300, connect=60)) as http:
        storm = asyncio.gather(*(run_client(http, c, i) for i, c in enumerate(clients)))
        peak = 0.0
        while not storm.done():  # the cache really fills up meanwhile (the gauge is live)
            peak = max(peak, await kv_usage(http))
            await asyncio.wait({storm}, timeout=0.5)
        await storm
    assert peak > 0

    # a client with a hang-up timer whose whole answer came first stays (and is checked as a stayer)
    assert not any(c.left for c in clients if c not in leavers), "a client meant to stay left"
    assert all(c.left for c in clients if c.leave_after is not None), "a client meant to leave mid-stream stayed"
    stayed = [c for c in clients if not c.left]
    assert any(c.left and c.leave_before_s is not None and c.status is None for c in clients), \
        "no client hung up while its request was still queued"
    for c in stayed:
        assert c.status == 200 and c.events[-1] == "[DONE]", (c.request_id, c.status, c.events[-2:])
        chunks = [json.loads(e) for e in c.events[:-1]]
        assert [ch["finish_reason"] for chunk in chunks for ch in chunk["choices"] if ch["finish_reason"]] \
            == ["length"]
        assert chunks[-1]["usage"]["completion_tokens"] == MAX_TOKENS

    # every block is free again, nothing runs or waits (allow the aborts a moment to land)
    assert poll(lambda: engine_idle(busy_server.url), timeout=5.0), (
        metric(busy_server.url, "vllm:kv_cache_usage_perc"), metric(busy_server.url, "vllm:num_requests_running"),
        metric(busy_server.url, "vllm:num_requests_waiting"))
    assert complete(busy_server.url)["choices"][0]["finish_reason"] == "length"

    # one audit record per request that reached the Gateway: the finished ones served
    audit = audit_file(busy_server)
    answered = [c.request_id for c in clients if c.status == 200]
    assert poll(lambda: set(answered) <= set(audit_by_request(audit)), timeout=10.0)
    grouped = audit_by_request(audit)
    for c in clients:
        records = grouped.get(c.request_id, [])
        assert len(records) <= 1, f"{c.request_id}: {len(records)} audit records"
        if c.status == 200:
            assert len(records) == 1, f"{c.request_id}: no audit record"
        if records:
            # a leaver may still be 'served' when its last token went out before the hang-up was seen
            expected = {"served"} if not c.left else {"served", "aborted"}
            assert records[0]["outcome"] in expected, (c.request_id, records[0]["outcome"])
    assert sum(grouped[c.request_id][0]["outcome"] == "aborted" for c in leavers if c.request_id in grouped) > 0


def test_client_timing_out_a_long_unary_request_aborts_it(busy_server: ServerProcess) -> None:
    assert poll(lambda: engine_idle(busy_server.url), timeout=5.0)
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(busy_server.url + "/v1/completions", json=body, timeout=1.0,
                   headers={**headers("alice"), "X-Request-Id": "unary-timeout"})
    gone = time.monotonic()
    # the server sees the hang-up (routes.unless_disconnected) and aborts the engine request at once
    assert poll(lambda: metric(busy_server.url, "vllm:num_requests_running") == 0, timeout=2.0, interval=0.05), \
        f"still running 2 s after the client left:\n{busy_server.log()}"
    assert time.monotonic() - gone < 2.5
    assert poll(lambda: engine_idle(busy_server.url), timeout=2.0)

    audit = audit_file(busy_server)
    assert poll(lambda: "unary-timeout" in audit_by_request(audit), timeout=5.0)
    [record] = audit_by_request(audit)["unary-timeout"]
    assert record["outcome"] == "aborted" and 0 < record["output_tokens"] < 2000, record
    assert complete(busy_server.url)["usage"]["completion_tokens"] == 6
