"""The pure parts of bench/bench_serve.py: SSE parsing, the stream recorder, statistics, goodput, the
Poisson schedule, the load loops and the ratios; plus one streamed request through a mock transport.
No server, no model: fast on any CPU."""

from __future__ import annotations

import asyncio
import json
import statistics

import httpx
import pytest

from bench.bench_serve import (
    BASTION,
    INPROCESS,
    LLAMA_SERVER,
    SSE_DONE,
    LoadPoint,
    RequestRecord,
    StreamRecorder,
    bastion_command,
    completion_body,
    compute_ratios,
    distribution_ms,
    goodput,
    http_request,
    meets_slos,
    parse_options,
    parse_slo,
    parse_sse_line,
    poisson_schedule,
    run_closed_loop,
    run_schedule,
    summarize,
)


def chunk(text: str) -> dict:
    """A streamed completion chunk carrying ``text``."""
    return {"choices": [{"index": 0, "text": text, "finish_reason": None}]}


def usage(prompt: int, completion: int) -> dict:
    """The final ``include_usage`` chunk (``choices == []``)."""
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}}


def record(ttft: float, e2e: float, n: int, ok: bool = True) -> RequestRecord:
    """A finished request record with the given TTFT, E2E latency (s) and output tokens."""
    return RequestRecord(0, ok=ok, ttft_s=ttft, e2e_s=e2e, output_tokens=n, prompt_tokens=10)


# ---------------------------------------------------------------------------------------------- SSE

def test_parse_sse_line() -> None:
    assert parse_sse_line('data: {"a": 1}') == {"a": 1}
    assert parse_sse_line('data:{"a": 1}\r\n') == {"a": 1}
    assert parse_sse_line("data: [DONE]") == SSE_DONE
    for line in ("", "   ", ": keep-alive", "event: message", "id: 7", "retry: 100"):
        assert parse_sse_line(line) is None
    with pytest.raises(ValueError):
        parse_sse_line("data: {not json")
    with pytest.raises(ValueError):
        parse_sse_line("data: [1, 2]")


def test_recorder_vllm_definitions() -> None:
    rec = RequestRecord(3)
    r = StreamRecorder(rec, start=10.0)
    r.feed(chunk("Hello"), 10.5)   # TTFT 0.5
    r.feed(chunk(" world"), 10.6)
    r.feed(chunk(""), 10.65)       # empty text (e.g. the finish_reason chunk): not a token
    r.feed(chunk("!"), 10.9)
    r.feed(usage(12, 3), 10.95)
    r.finish(done=True)
    assert rec.ok and rec.error is None
    assert rec.ttft_s == pytest.approx(0.5)
    assert rec.e2e_s == pytest.approx(0.9)  # the last chunk with text, not the usage chunk
    assert rec.itl_s == pytest.approx([0.1, 0.3])
    assert rec.chunks == 3 and rec.output_tokens == 3 and rec.prompt_tokens == 12
    assert rec.tpot_s == pytest.approx((0.9 - 0.5) / 2)


def test_recorder_splits_multi_token_chunks_by_usage() -> None:
    """Per-chunk usage (continuous usage stats): a chunk of k tokens is k gaps of gap/k."""
    rec = RequestRecord(0)
    r = StreamRecorder(rec, start=0.0)
    r.feed(chunk("a") | {"usage": {"prompt_tokens": 5, "completion_tokens": 1}}, 1.0)
    r.feed(chunk("bcd") | {"usage": {"prompt_tokens": 5, "completion_tokens": 4}}, 1.3)
    r.feed(usage(5, 4), 1.31)
    r.finish(True)
    assert rec.ok and rec.output_tokens == 4 and rec.chunks == 2
    assert rec.itl_s == pytest.approx([0.1, 0.1, 0.1])
    assert sum(rec.itl_s) == pytest.approx(rec.e2e_s - rec.ttft_s)


def test_recorder_failures() -> None:
    no_done = StreamRecorder(RequestRecord(0), 0.0)
    no_done.feed(chunk("x"), 1.0)
    assert not no_done.finish(done=False).ok
    no_usage = StreamRecorder(RequestRecord(0), 0.0)
    no_usage.feed(chunk("x"), 1.0)
    rec = no_usage.finish(done=True)
    assert not rec.ok and "usage" in (rec.error or "")
    no_text = StreamRecorder(RequestRecord(0), 0.0)
    no_text.feed(usage(3, 0), 1.0)
    assert not no_text.finish(True).ok
    err = StreamRecorder(RequestRecord(0), 0.0)
    err.feed({"error": {"message": "boom", "type": "server_error"}}, 1.0)
    rec = err.finish(True)
    assert not rec.ok and "boom" in (rec.error or "")
    inproc = StreamRecorder(RequestRecord(0), 0.0, need_usage=False)
    inproc.tokens(0.2, 1)
    inproc.tokens(0.5, 3)
    rec = inproc.finish(True)
    assert rec.ok and rec.itl_s == pytest.approx([0.1, 0.1, 0.1])


def test_tpot_none_for_single_token_or_failure() -> None:
    assert record(0.1, 0.1, 1).tpot_s is None
    assert record(0.1, 0.5, 5, ok=False).tpot_s is None
    assert record(0.1, 0.5, 5).tpot_s == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------- statistics

def test_distribution_ms() -> None:
    d = distribution_ms([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert d["mean"] == pytest.approx(50.5)
    assert d["p50"] == pytest.approx(50.5)
    assert d["p90"] == pytest.approx(90.1)
    assert d["p99"] == pytest.approx(99.01)
    assert distribution_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert distribution_ms([0.25])["p99"] == pytest.approx(250.0)


def test_parse_slo() -> None:
    assert parse_slo("ttft_ms=2000") == ("ttft_ms", 2000.0)
    assert parse_slo("tpot_ms=50.5") == ("tpot_ms", 50.5)
    for bad in ("ttft=2000", "ttft_ms", "ttft_ms=0", "itl_ms=5"):
        with pytest.raises(ValueError):
            parse_slo(bad)


def test_goodput() -> None:
    records = [record(0.1, 1.0, 10), record(3.0, 4.0, 10), record(0.2, 5.2, 11), record(0.1, 0.2, 2, ok=False)]
    # TPOTs: 100 ms, 111 ms, 500 ms
    assert meets_slos(records[0], {"ttft_ms": 2000, "tpot_ms": 200})
    assert not meets_slos(records[1], {"ttft_ms": 2000})
    assert not meets_slos(records[3], {})  # failed requests never count
    assert goodput(records, {"ttft_ms": 2000}, 2.0) == pytest.approx(1.0)
    assert goodput(records, {"ttft_ms": 2000, "tpot_ms": 200}, 2.0) == pytest.approx(0.5)
    assert goodput(records, {"e2el_ms": 4500}, 4.0) == pytest.approx(0.5)
    assert goodput(records, {}, 2.0) is None
    assert meets_slos(record(0.1, 0.1, 1), {"tpot_ms": 1})  # a single token has TPOT 0


def test_summarize() -> None:
    a = record(0.5, 1.5, 11)
    a.itl_s, a.chunks = [0.1] * 10, 11
    b = record(0.3, 0.8, 6)
    b.itl_s, b.chunks = [0.1] * 5, 6
    bad = RequestRecord(2, error="HTTP 500: oops")
    s = summarize([a, b, bad], 2.0, {"ttft_ms": 400}, expected_output=11)
    assert s["completed"] == 2 and s["failed"] == 1 and s["errors"] == ["HTTP 500: oops"]
    assert s["output_tokens"] == 17 and s["input_tokens"] == 20
    assert s["request_throughput"] == pytest.approx(1.0)
    assert s["output_throughput"] == pytest.approx(8.5)
    assert s["total_token_throughput"] == pytest.approx(18.5)
    assert s["ttft_ms"]["mean"] == pytest.approx(400.0)
    assert s["tpot_ms"]["mean"] == pytest.approx(100.0)
    assert s["itl_ms"]["p50"] == pytest.approx(100.0)
    assert s["e2el_ms"]["p99"] == pytest.approx(1493.0)
    assert s["goodput"] == pytest.approx(0.5)
    assert s["tokens_per_chunk"] == pytest.approx(1.0)
    assert s["short_outputs"] == 1


# ---------------------------------------------------------------------------------------------- load

def test_poisson_schedule() -> None:
    times = poisson_schedule(20000, 4.0, seed=7)
    assert times == poisson_schedule(20000, 4.0, seed=7)  # seeded
    assert times != poisson_schedule(20000, 4.0, seed=8)
    assert all(b > a for a, b in zip(times, times[1:])) and times[0] > 0
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.05)  # exponential: sd = mean
    assert poisson_schedule(0, 1.0, 0) == []
    for rate in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError):
            poisson_schedule(3, rate, 0)


async def test_closed_loop_keeps_concurrency() -> None:
    in_flight, peak, seen = 0, 0, []

    async def send(i: int) -> RequestRecord:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        seen.append(i)
        await asyncio.sleep(0.001 * (i % 3))
        in_flight -= 1
        return RequestRecord(i, ok=True)

    records, wall = await run_closed_loop(send, 10, 3)
    assert peak == 3 and sorted(seen) == list(range(10)) and len(seen) == 10
    assert [r.index for r in records] == list(range(10)) and wall > 0
    records, _ = await run_closed_loop(send, 2, 64)  # never more clients than prompts
    assert len(records) == 2


async def test_schedule_sends_on_time() -> None:
    sent: dict[int, float] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(i: int) -> RequestRecord:
        sent[i] = loop.time() - start
        return RequestRecord(i, ok=True)

    records, wall = await run_schedule(send, [0.0, 0.05, 0.1])
    assert [r.index for r in records] == [0, 1, 2]
    assert sent[1] >= 0.045 and sent[2] >= 0.095 and wall >= 0.095


# ---------------------------------------------------------------------------------------------- HTTP

async def test_http_request_through_mock_transport() -> None:
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        events = [chunk("Hi"), chunk(" there"), chunk("") | {"choices": [{"text": "", "finish_reason": "length"}]},
                  usage(7, 2)]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ": comment\n\ndata: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})

    body = completion_body("m", "a prompt", 2, {"cache_prompt": False})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        rec = await http_request(client, "http://test/v1/completions", body, 4)
    assert rec.ok and rec.index == 4 and rec.output_tokens == 2 and rec.prompt_tokens == 7 and rec.chunks == 2
    assert bodies == [{"model": "m", "prompt": "a prompt", "max_tokens": 2, "temperature": 0, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}, "cache_prompt": False}]

    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda r: httpx.Response(400, json={"error": {"message": "bad"}}))) as client:
        rec = await http_request(client, "http://test/v1/completions", body, 0)
    assert not rec.ok and (rec.error or "").startswith("HTTP 400")

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as client:
        rec = await http_request(client, "http://test/v1/completions", body, 0)
    assert not rec.ok and "ConnectError" in (rec.error or "")


# ---------------------------------------------------------------------------------------------- plumbing

def test_options_and_bastion_command() -> None:
    opts = parse_options(["max_num_seqs=64", "enable-prefix-caching=false"])
    assert opts == {"max_num_seqs": "64", "enable_prefix_caching": "false"}
    with pytest.raises(ValueError):
        parse_options(["novalue"])
    cmd = bastion_command("m.gguf", 8123, opts)  # type: ignore[arg-type]
    assert cmd[1:] == ["-m", "bastion", "serve", "m.gguf", "--host", "127.0.0.1", "--port", "8123",
                       "--max-num-seqs", "64", "--enable-prefix-caching", "false"]


def test_load_point_keys() -> None:
    assert LoadPoint("concurrency", 64, 10).key == "c64"
    assert LoadPoint("poisson", 0.5, 10).key == "r0.5"
    assert LoadPoint("poisson", 2.0, 10).describe() == {"mode": "poisson", "rate": 2.0, "num_prompts": 10}


def test_compute_ratios() -> None:
    def point(mode: str, value: float, tok_s: float, p99: float) -> dict:
        key = "concurrency" if mode == "concurrency" else "rate"
        return {"mode": mode, key: value, "output_throughput": tok_s, "ttft_ms": {"p99": p99}}

    servers = {
        LLAMA_SERVER: {"points": [point("concurrency", 64, 100.0, 9000), point("poisson", 1.0, 40, 500),
                                  point("poisson", 2.0, 80, 1500), point("poisson", 4.0, 90, 6000)]},
        BASTION: {"points": [point("concurrency", 64, 150.0, 5000), point("poisson", 1.0, 40, 400),
                             point("poisson", 2.0, 80, 750), point("poisson", 4.0, 120, 1000)]},
        INPROCESS: {"points": [point("concurrency", 64, 160.0, 4000)]},
    }
    r = compute_ratios(servers, [64], [1.0, 2.0, 4.0], 2000.0)
    assert r["output_throughput_bastion_over_llama_server"] == {"c64": 1.5}
    assert r["ttft_knee_rate"] == 2.0
    assert r["p99_ttft_bastion_over_llama_server"] == 0.5
    assert r["http_overhead"]["c64"] == pytest.approx(1 - 150 / 160)
    servers[BASTION] = {"error": "did not start", "points": []}  # a missing side gives None, not a crash
    r = compute_ratios(servers, [64], [1.0, 2.0, 4.0], 2000.0)
    assert r["output_throughput_bastion_over_llama_server"] == {"c64": None}
    assert r["http_overhead"] == {"c64": None} and r["p99_ttft_bastion_over_llama_server"] is None
