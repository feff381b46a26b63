"""Serving benchmark: bastion's HTTP server against llama-server, one client, vLLM ``bench serve``'s figures.

Both servers are started by this script as subprocesses, one after the other (never both at once), on
the same GGUF file (``--model``; default: the embedded SmolLM2-135M), with the same threads and the
same number of parallel sequences (``--max-num-seqs``: bastion's ``--max-num-seqs``, llama-server's
``-np``). One ``httpx.AsyncClient`` drives both with streaming ``POST /v1/completions``::

    {"model", "prompt", "max_tokens", "temperature": 0, "ignore_eos": true, "stream": true,
     "stream_options": {"include_usage": true}}

(llama-server also gets ``"cache_prompt": false``) and reads the SSE ``data:`` lines until
``data: [DONE]``. Every prompt is text of ``--input-len`` tokens (the model's own tokenizer) that
starts with its own number, so no prefix cache can skip work; every load point gets prompts of its
own, the same ones for every server. Output tokens are counted from the final usage chunk.

Load modes:
  closed loop   ``--concurrency 64``: 64 clients, each sending its next request when its previous
                one ends, ``--num-prompts`` requests in all
  Poisson       ``--rates 0.5,1,2,4``: requests sent at exponential inter-arrival times (mean 1/rate,
                a ``random.Random(--seed)``), ``--poisson-prompts`` (default ``--num-prompts``) per rate,
                however many are already in flight
  in-process    ``--in-process``: the closed-loop workload through ``bastion.AsyncLLM`` in this
                process (delta outputs), for HTTP overhead = 1 - http_tok_s / inprocess_tok_s

Figures, vLLM's definitions (client clock, milliseconds, mean/p50/p90/p99 over successful requests):
  TTFT   request sent -> first streamed chunk with text
  TPOT   (e2e - TTFT) / (output_tokens - 1), per request
  ITL    gaps between streamed chunks; a chunk carrying k tokens (known from per-chunk usage when a
         server sends it; in-process always) counts as k gaps of gap/k, so a chunk is one token
         otherwise (``tokens_per_chunk`` says whether that held)
  E2EL   request sent -> last chunk with text
plus request throughput, output and total token throughput (over the wall clock from the first
request to the last answer) and goodput: requests/s meeting every ``--slo`` (``ttft_ms``,
``tpot_ms``, ``e2el_ms``). Ratios (bastion / llama-server): output tok/s at each concurrency point,
p99 TTFT at the highest Poisson rate where llama-server's p99 TTFT stays under ``--ttft-knee-ms``
(2000), and the HTTP overhead. ``--json`` prints one object; ``--plot PATH.png`` draws latency against
throughput over the Poisson rates (p99 TTFT and mean TPOT against output tok/s, one line per server).
A server that does not start or answer becomes an ``error`` entry, and the run goes on.

    python -m bench.bench_serve --concurrency 64 --rates 0.5,1,2,4 --in-process --json \\
        --plot bench/results/serve.png > bench/results/serve.json
    python -m bench.bench_serve --servers llama-server --concurrency 4 --num-prompts 8 --output-len 8

llama-server comes from the llama-cpp-python sdist's vendored llama.cpp and is found through
``$LLAMA_CPP_BIN`` (its ``build/bin``) or ``PATH``::

    pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    cd llama_cpp_python-*/vendor/llama.cpp
    cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && \\
        cmake --build build -j --target llama-server llama-quantize llama-batched-bench
    export LLAMA_CPP_BIN=$PWD/build/bin

bastion's server is ``python -m bastion serve MODEL --host 127.0.0.1 --port P`` with every
``EngineConfig`` field as a flag (``--bastion-option KEY=VALUE`` becomes ``--key VALUE`` there and
``KEY=VALUE`` in the in-process engine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from tqdm.auto import tqdm

from bench.common import bench_parser, emit, num_cores, pct, vm_hwm_mb
from bench.model_files import llama_cpp_tool

SSE_DONE = "[DONE]"
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")
LLAMA_SERVER, BASTION, INPROCESS = "llama-server", "bastion", "bastion-inprocess"
CONTEXT_SLACK = 64  # tokens per llama-server slot beyond input + output (BOS, re-tokenization)
_FILLER = ("The committee reviewed the quarterly figures, the shipping schedule and the new safety rules "
           "before lunch; afterwards each team explained what had changed since spring and why. ")


# ---------------------------------------------------------------------------------------------- records

@dataclass
class RequestRecord:
    """What one request measured on the client's clock (seconds from the moment it was sent)."""

    index: int
    ok: bool = False
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    chunks: int = 0  # streamed chunks that carried text (or tokens, in-process)
    output_tokens: int = 0
    prompt_tokens: int | None = None

    @property
    def tpot_s(self) -> float | None:
        """(e2e - TTFT) / (output_tokens - 1); None for a failed request or a single token."""
        if not self.ok or self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def parse_sse_line(line: str) -> dict[str, Any] | str | None:
    """One line of a server-sent-event stream: the JSON object of a ``data:`` line, ``SSE_DONE`` for
    ``data: [DONE]``, None for anything else (blank lines, comments, ``event:``/``id:`` fields).

    Raises ``ValueError`` (``json.JSONDecodeError``) for a ``data:`` line that is not JSON.
    """
    line = line.strip()
    if not line.startswith("data:"):
        return None
    payload = line[len("data:"):].strip()
    if payload == SSE_DONE:
        return SSE_DONE
    event = json.loads(payload)
    if not isinstance(event, dict):
        raise ValueError(f"SSE data is not a JSON object: {payload[:200]}")
    return event


class StreamRecorder:
    """Turns the events of one streamed completion into a ``RequestRecord``.

    ``feed(event, now)`` for every parsed ``data:`` object (``now`` on the clock of ``start``), then
    ``finish(done)``. A chunk counts as a token chunk when its first choice has non-empty text; its
    token count is the rise of ``usage.completion_tokens`` when the chunk carries usage, else 1. The
    usage object seen last gives the output and prompt token counts (required when ``need_usage``).
    """

    def __init__(self, record: RequestRecord, start: float, need_usage: bool = True) -> None:
        """Record into ``record``; ``start`` is when the request was sent."""
        self.record = record
        self.start = start
        self.need_usage = need_usage
        self._last: float | None = None
        self._usage_tokens = 0  # completion_tokens of the latest usage seen
        self._saw_usage = False

    def tokens(self, now: float, k: int) -> None:
        """A chunk of ``k`` tokens arrived at ``now`` (the in-process path calls this directly)."""
        if k <= 0:
            return
        rec = self.record
        rec.chunks += 1
        if self._last is None:
            rec.ttft_s = now - self.start
        else:
            gap = now - self._last
            rec.itl_s.extend([gap / k] * k)
        self._last = now
        rec.e2e_s = now - self.start

    def feed(self, event: dict[str, Any], now: float) -> None:
        """One parsed SSE ``data:`` object that arrived at ``now``."""
        if "error" in event:
            err = event["error"]
            self.record.error = f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
            return
        usage = event.get("usage")
        rise = None
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            count = int(usage["completion_tokens"])
            rise = count - self._usage_tokens
            self._usage_tokens = count
            self._saw_usage = True
            self.record.output_tokens = count
            if usage.get("prompt_tokens") is not None:
                self.record.prompt_tokens = int(usage["prompt_tokens"])
        choices = event.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict) and choices[0].get("text"):
            self.tokens(now, rise if rise is not None and rise > 0 else 1)

    def finish(self, done: bool) -> RequestRecord:
        """Close the record: ok when ``[DONE]`` came, nothing failed, a token arrived and usage was sent."""
        rec = self.record
        if rec.error is None:
            if not done:
                rec.error = "stream ended without data: [DONE]"
            elif rec.ttft_s is None:
                rec.error = "no streamed text"
            elif self.need_usage and not self._saw_usage:
                rec.error = "no usage chunk (stream_options.include_usage)"
        rec.ok = rec.error is None
        return rec


# ---------------------------------------------------------------------------------------------- statistics

def distribution_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50, p90 and p99 of ``values_s`` (seconds) in milliseconds; None when there are none."""
    if not values_s:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    out: dict[str, float | None] = {"mean": round(1e3 * sum(values_s) / len(values_s), 3)}
    for q in (50, 90, 99):
        out[f"p{q}"] = round(1e3 * pct(values_s, q), 3)
    return out


def parse_slo(text: str) -> tuple[str, float]:
    """``"ttft_ms=2000"`` -> ``("ttft_ms", 2000.0)``; the key must be one of ``SLO_KEYS``, the value > 0."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in SLO_KEYS:
        raise ValueError(f"--slo {text!r}: expected KEY=MS with KEY one of {', '.join(SLO_KEYS)}")
    limit = float(value)
    if not limit > 0:
        raise ValueError(f"--slo {text!r}: the limit must be > 0 ms")
    return key, limit


def meets_slos(record: RequestRecord, slos: dict[str, float]) -> bool:
    """Whether a successful ``record`` is within every SLO (milliseconds); a single-token answer has TPOT 0."""
    if not record.ok:
        return False
    values = {"ttft_ms": record.ttft_s, "tpot_ms": record.tpot_s or 0.0, "e2el_ms": record.e2e_s}
    for key, limit in slos.items():
        value = values[key]
        if value is None or 1e3 * value > limit:
            return False
    return True


def goodput(records: Sequence[RequestRecord], slos: dict[str, float], duration_s: float) -> float | None:
    """Requests per second that succeeded within every SLO; None without SLOs or a duration."""
    if not slos or duration_s <= 0:
        return None
    return sum(meets_slos(r, slos) for r in records) / duration_s


def summarize(records: Sequence[RequestRecord], duration_s: float, slos: dict[str, float],
              expected_output: int | None = None) -> dict[str, Any]:
    """Every figure of one load point from its request records and its wall clock."""
    good = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in good)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in good)
    chunks = sum(r.chunks for r in good)
    errors = sorted({r.error for r in records if r.error})
    out: dict[str, Any] = {
        "completed": len(good), "failed": len(records) - len(good), "duration_s": round(duration_s, 3),
        "input_tokens": prompt_tokens, "output_tokens": output_tokens,
        "request_throughput": round(len(good) / duration_s, 4) if duration_s > 0 else None,
        "output_throughput": round(output_tokens / duration_s, 3) if duration_s > 0 else None,
        "total_token_throughput": round((prompt_tokens + output_tokens) / duration_s, 3) if duration_s > 0 else None,
        "mean_input_tokens": round(prompt_tokens / len(good), 2) if good else None,
        "tokens_per_chunk": round(output_tokens / chunks, 3) if chunks else None,
        "ttft_ms": distribution_ms([r.ttft_s for r in good if r.ttft_s is not None]),
        "tpot_ms": distribution_ms([t for r in good if (t := r.tpot_s) is not None]),
        "itl_ms": distribution_ms([gap for r in good for gap in r.itl_s]),
        "e2el_ms": distribution_ms([r.e2e_s for r in good if r.e2e_s is not None]),
        "goodput": round(g, 4) if (g := goodput(records, slos, duration_s)) is not None else None,
        "errors": errors[:5],
    }
    if expected_output is not None:
        out["short_outputs"] = sum(r.output_tokens != expected_output for r in good)
    return out


# ---------------------------------------------------------------------------------------------- load

def poisson_schedule(n: int, rate: float, seed: int) -> list[float]:
    """Send times (seconds from the start) of ``n`` requests at ``rate`` per second: cumulative
    exponential inter-arrival times from ``random.Random(seed)``, the first one included."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of requests/s, got {rate}")
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(n):
        now += rng.expovariate(rate)
        times.append(now)
    return times


SendFn = Callable[[int], Awaitable[RequestRecord]]  # prompt index -> its record


async def run_closed_loop(send: SendFn, num_prompts: int, concurrency: int,
                          bar: Any = None) -> tuple[list[RequestRecord], float]:
    """``concurrency`` clients, each sending the next prompt when its previous request ended, until
    ``num_prompts`` were sent; returns the records (in prompt order) and the wall clock in seconds."""
    records: list[RequestRecord | None] = [None] * num_prompts
    next_index = iter(range(num_prompts))

    async def client() -> None:
        for i in next_index:  # a shared iterator: each index is taken by exactly one client
            records[i] = await send(i)
            if bar is not None:
                bar.update(1)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(max(1, min(concurrency, num_prompts)))))
    return [r for r in records if r is not None], time.perf_counter() - start


async def run_schedule(send: SendFn, send_times: Sequence[float],
                       bar: Any = None) -> tuple[list[RequestRecord], float]:
    """Send prompt ``i`` at ``send_times[i]`` seconds after the start (open loop, no cap on requests in
    flight); returns the records and the wall clock from the start to the last answer."""
    async def one(i: int, at: float) -> RequestRecord:
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = await send(i)
        if bar is not None:
            bar.update(1)
        return rec

    start = time.perf_counter()
    records = await asyncio.gather(*(one(i, t) for i, t in enumerate(send_times)))
    return list(records), time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- clients

def completion_body(model: str, prompt: str, max_tokens: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The streaming ``/v1/completions`` request body (greedy, EOS ignored, usage in the last chunk)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    body.update(extra or {})
    return body


async def http_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], index: int) -> RequestRecord:
    """Send one streaming completion and time its chunks; failures are recorded, never raised."""
    rec = RequestRecord(index)
    start = time.perf_counter()
    recorder = StreamRecorder(rec, start)
    done = False
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                rec.error = f"HTTP {resp.status_code}: {text[:300]}"
            else:
                async for line in resp.aiter_lines():
                    event = parse_sse_line(line)
                    if event is None:
                        continue
                    if event == SSE_DONE:
                        done = True
                        break
                    recorder.feed(event, time.perf_counter())  # type: ignore[arg-type]
    except (httpx.HTTPError, ValueError, OSError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    return recorder.finish(done)


async def inprocess_request(engine: Any, prompt: str, params: Any, index: int) -> RequestRecord:
    """One ``AsyncLLM.generate`` stream (delta outputs) timed like an HTTP request."""
    rec = RequestRecord(index)
    start = time.perf_counter()
    recorder = StreamRecorder(rec, start, need_usage=False)  # token counts come from the outputs
    try:
        async for out in engine.generate(prompt, params):
            k = len(out.token_ids)
            if k:
                recorder.tokens(time.perf_counter(), k)
                rec.output_tokens += k
            rec.prompt_tokens = len(out.prompt_token_ids)
    except Exception as exc:  # noqa: BLE001 - a failed request is a row, not a crash
        rec.error = f"{type(exc).__name__}: {exc}"
    return recorder.finish(True)


# ---------------------------------------------------------------------------------------------- workload

@dataclass(frozen=True)
class LoadPoint:
    """One load setting: ``mode`` "concurrency" (``value`` clients) or "poisson" (``value`` requests/s)."""

    mode: str
    value: float
    num_prompts: int

    @property
    def key(self) -> str:
        """A short name: ``c64`` or ``r0.5``."""
        return f"c{int(self.value)}" if self.mode == "concurrency" else f"r{self.value:g}"

    def describe(self) -> dict[str, Any]:
        """The load point as JSON fields."""
        if self.mode == "concurrency":
            return {"mode": "concurrency", "concurrency": int(self.value), "num_prompts": self.num_prompts}
        return {"mode": "poisson", "rate": self.value, "num_prompts": self.num_prompts}


def load_tokenizer(model: Path) -> Any:
    """The tokenizer of a GGUF file, built by bastion from its header (no weights loaded)."""
    from bastion.model.gguf_header import GGUFHeader
    from bastion.model.tokenizer import Tokenizer

    return Tokenizer.from_gguf_metadata(dict(GGUFHeader(model).fields))


def text_prompts(tokenizer: Any, first: int, n: int, input_len: int) -> list[str]:
    """``n`` text prompts of ``input_len`` tokens (by ``tokenizer``, specials left to the server), prompt
    ``i`` opening with the number ``first + i`` so no two share their first tokens."""
    prompts = []
    for i in range(first, first + n):
        ids = tokenizer.encode(f"Request {i}: " + _FILLER * (input_len // 8 + 4), add_special_tokens=False)
        if len(ids) < input_len:
            raise ValueError(f"could not build a {input_len}-token prompt (got {len(ids)})")
        prompts.append(tokenizer.decode(ids[:input_len]))
    return prompts


def load_points(args: argparse.Namespace) -> list[LoadPoint]:
    """The closed-loop points (``--concurrency``) then the Poisson rates (``--rates``)."""
    points = [LoadPoint("concurrency", c, args.num_prompts) for c in args.concurrency]
    points += [LoadPoint("poisson", r, args.poisson_prompts or args.num_prompts) for r in args.rates]
    return points


def prompts_for(points: Sequence[LoadPoint], tokenizer: Any, input_len: int, warmup: int) -> dict[str, list[str]]:
    """Distinct prompts per load point (and ``"warmup"``), the same ones for every server."""
    out = {"warmup": text_prompts(tokenizer, 900_000, warmup, input_len)}
    first = 0
    for p in points:
        out[p.key] = text_prompts(tokenizer, first, p.num_prompts, input_len)
        first += p.num_prompts
    return out


async def run_point(send_prompt: Callable[[str, int], Awaitable[RequestRecord]], point: LoadPoint,
                    prompts: Sequence[str], seed: int, label: str) -> tuple[list[RequestRecord], float]:
    """Drive one load point with ``send_prompt(prompt, index)``, a progress bar on stderr."""
    async def send(i: int) -> RequestRecord:
        return await send_prompt(prompts[i], i)

    with tqdm(total=point.num_prompts, desc=f"{label} {point.key}", unit="req", file=sys.stderr,
              leave=False) as bar:
        if point.mode == "concurrency":
            return await run_closed_loop(send, point.num_prompts, int(point.value), bar)
        return await run_schedule(send, poisson_schedule(point.num_prompts, point.value, seed), bar)


# ---------------------------------------------------------------------------------------------- servers

def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    """``["max_num_seqs=64", ...]`` -> ``{"max_num_seqs": "64"}`` (values stay strings; EngineConfig
    and the server's flags convert them)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--bastion-option {pair!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def bastion_command(model: Path, port: int, options: dict[str, str]) -> list[str]:
    """``python -m bastion serve MODEL --host 127.0.0.1 --port P --key-with-dashes VALUE ...``."""
    cmd = [sys.executable, "-m", "bastion", "serve", str(model), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", value]
    return cmd


def llama_server_command(binary: str, model: Path, port: int, parallel: int, context: int, threads: int) -> list[str]:
    """``llama-server -np N -c CTX -t T -tb T`` on loopback, its prompt cache RAM off."""
    return [binary, "-m", str(model), "-np", str(parallel), "-c", str(context), "-t", str(threads), "-tb",
            str(threads), "--host", "127.0.0.1", "--port", str(port), "--cache-ram", "0"]


class ServerProcess:
    """A server subprocess on loopback, in a scratch working directory (bastion's server writes its job
    store there): started, waited for (``ready_path`` answering 200), stopped."""

    def __init__(self, name: str, command: list[str], port: int, ready_path: str, timeout_s: float) -> None:
        """Remember how to start it; ``start`` does."""
        self.name, self.command, self.port = name, command, port
        self.ready_path, self.timeout_s = ready_path, timeout_s
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cwd: tempfile.TemporaryDirectory[str] | None = None
        self.ready_s: float | None = None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of its stdout + stderr."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    def start(self) -> None:
        """Launch it and wait until ``ready_path`` answers 200; RuntimeError (with its log) otherwise."""
        self._log = tempfile.TemporaryFile()
        self._cwd = tempfile.TemporaryDirectory(prefix=f"bench-serve-{self.name}-")  # whatever it writes goes here
        start = time.perf_counter()
        try:
            self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=self._cwd.name)
        except OSError as exc:
            raise RuntimeError(f"{self.name} did not start: {exc}") from exc
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}: {self.log_tail()}")
                if time.perf_counter() - start > self.timeout_s:
                    raise RuntimeError(f"{self.name} not ready after {self.timeout_s:g} s: {self.log_tail()}")
                try:
                    if client.get(self.base + self.ready_path).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        self.ready_s = time.perf_counter() - start

    def model_id(self, fallback: str) -> str:
        """The first model id of ``GET /v1/models``, ``fallback`` when there is none."""
        try:
            data = httpx.get(self.base + "/v1/models", timeout=10.0).json().get("data") or []
            return str(data[0]["id"]) if data else fallback
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
            return fallback

    def stop(self) -> float | None:
        """Stop it (SIGTERM, then SIGKILL after 30 s); returns its peak RSS in MB when it could be read."""
        rss = None
        if self.proc is not None:
            rss = vm_hwm_mb(self.proc.pid)
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._cwd is not None:
            self._cwd.cleanup()
            self._cwd = None
        return rss


def llama_server_version() -> str | None:
    """``llama-server --version``'s version line, None when it cannot be run."""
    try:
        proc = subprocess.run([llama_cpp_tool("llama-server"), "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (FileNotFoundError, OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("version")]
    return lines[0].split(":", 1)[1].strip() if lines else None


def make_server(name: str, args: argparse.Namespace, model: Path, options: dict[str, str]) -> ServerProcess:
    """The ``ServerProcess`` of ``name`` ("llama-server" or "bastion") under this run's settings."""
    port = free_port()
    if name == LLAMA_SERVER:
        slot = -(-(args.input_len + args.output_len + CONTEXT_SLACK) // 256) * 256
        cmd = llama_server_command(llama_cpp_tool("llama-server"), model, port, args.max_num_seqs,
                                   args.max_num_seqs * slot, args.threads)
        return ServerProcess(name, cmd, port, "/health", args.server_timeout)
    if name == BASTION:
        return ServerProcess(name, bastion_command(model, port, options), port, "/ready", args.server_timeout)
    raise ValueError(f"unknown server {name!r} (llama-server, bastion)")


async def bench_server(name: str, args: argparse.Namespace, model: Path, options: dict[str, str],
                       points: Sequence[LoadPoint], prompts: dict[str, list[str]],
                       slos: dict[str, float]) -> dict[str, Any]:
    """Start one server, warm it up, run every load point against it, stop it; an ``error`` entry when
    it cannot be started or its warm-up fails."""
    try:
        server = make_server(name, args, model, options)
    except (FileNotFoundError, ValueError) as exc:
        return {"error": str(exc), "points": []}
    entry: dict[str, Any] = {"command": server.command, "points": []}
    try:
        await asyncio.to_thread(server.start)
        entry["ready_s"] = round(server.ready_s or 0.0, 3)
        model_id = server.model_id(str(model))
        entry["model_id"] = model_id
        extra = {"cache_prompt": False} if name == LLAMA_SERVER else {}
        url = server.base + "/v1/completions"
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout), limits=limits) as client:
            async def send_prompt(prompt: str, index: int, max_tokens: int = args.output_len) -> RequestRecord:
                return await http_request(client, url, completion_body(model_id, prompt, max_tokens, extra), index)

            for i, prompt in enumerate(prompts["warmup"]):
                rec = await send_prompt(prompt, i)
                if not rec.ok:
                    raise RuntimeError(f"warm-up request failed: {rec.error}")
            for point in points:
                records, duration = await run_point(send_prompt, point, prompts[point.key], args.seed, name)
                entry["points"].append(point.describe() | summarize(records, duration, slos, args.output_len))
    except RuntimeError as exc:
        entry["error"] = str(exc)
    finally:
        entry["rss_mb"] = server.stop()
    return entry


async def bench_inprocess(args: argparse.Namespace, model: Path, options: dict[str, str],
                          points: Sequence[LoadPoint], prompts: dict[str, list[str]],
                          slos: dict[str, float]) -> dict[str, Any]:
    """The closed-loop points through an in-process ``bastion.AsyncLLM`` (the options that are
    ``EngineConfig`` fields; server-only ones such as ``access_log`` are left out)."""
    import dataclasses

    import bastion

    options = {k: v for k, v in options.items() if k in bastion.EngineConfig.model_fields}  # not server flags
    entry: dict[str, Any] = {"engine_options": options, "points": []}
    try:
        start = time.perf_counter()
        engine = bastion.AsyncLLM(model=str(model), **options)
        entry["ready_s"] = round(time.perf_counter() - start, 3)
    except Exception as exc:  # noqa: BLE001 - reported in the entry
        return entry | {"error": f"AsyncLLM: {type(exc).__name__}: {exc}"}
    params = dataclasses.replace(bastion.SamplingParams(max_tokens=args.output_len, temperature=0.0,
                                                        ignore_eos=True), output_kind="delta")

    async def send_prompt(prompt: str, index: int) -> RequestRecord:
        return await inprocess_request(engine, prompt, params, index)

    try:
        for i, prompt in enumerate(prompts["warmup"]):
            rec = await send_prompt(prompt, i)
            if not rec.ok:
                raise RuntimeError(f"warm-up request failed: {rec.error}")
        for point in points:
            if point.mode == "concurrency":
                records, duration = await run_point(send_prompt, point, prompts[point.key], args.seed, INPROCESS)
                entry["points"].append(point.describe() | summarize(records, duration, slos, args.output_len))
    except RuntimeError as exc:
        entry["error"] = str(exc)
    finally:
        await engine.close()
    return entry


# ---------------------------------------------------------------------------------------------- ratios

def find_point(entry: dict[str, Any] | None, mode: str, value: float) -> dict[str, Any] | None:
    """The load point of ``entry`` with ``mode`` and ``value`` (concurrency or rate), None when absent."""
    for p in (entry or {}).get("points", []):
        if p["mode"] == mode and p.get("concurrency" if mode == "concurrency" else "rate") == value:
            return p
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def compute_ratios(servers: dict[str, dict[str, Any]], concurrency: Sequence[int], rates: Sequence[float],
                   knee_ms: float) -> dict[str, Any]:
    """bastion / llama-server output tok/s per concurrency point; bastion / llama-server p99 TTFT at the
    highest rate where llama-server's p99 TTFT is under ``knee_ms``; the HTTP overhead per concurrency
    point (1 - bastion HTTP output tok/s / in-process output tok/s)."""
    bas, peer, inproc = servers.get(BASTION), servers.get(LLAMA_SERVER), servers.get(INPROCESS)
    out: dict[str, Any] = {"output_throughput_bastion_over_llama_server": {},
                           "http_overhead": {}}
    for c in concurrency:
        b, p, i = (find_point(e, "concurrency", c) for e in (bas, peer, inproc))
        out["output_throughput_bastion_over_llama_server"][f"c{c}"] = _ratio(
            b and b["output_throughput"], p and p["output_throughput"])
        r = _ratio(b and b["output_throughput"], i and i["output_throughput"])
        out["http_overhead"][f"c{c}"] = round(1.0 - r, 4) if r is not None else None
    knee_rate = None
    for rate in sorted(rates):
        p = find_point(peer, "poisson", rate)
        if p is not None and p["ttft_ms"]["p99"] is not None and p["ttft_ms"]["p99"] < knee_ms:
            knee_rate = rate
    out["ttft_knee_rate"] = knee_rate
    out["p99_ttft_bastion_over_llama_server"] = None
    if knee_rate is not None:
        b, p = find_point(bas, "poisson", knee_rate), find_point(peer, "poisson", knee_rate)
        out["p99_ttft_bastion_over_llama_server"] = _ratio(b and b["ttft_ms"]["p99"], p and p["ttft_ms"]["p99"])
    return out


# ---------------------------------------------------------------------------------------------- output

def plot(result: dict[str, Any], path: str) -> None:
    """Latency against throughput over the Poisson rates: p99 TTFT (left) and mean TPOT (right) against
    output tok/s, one line per server, each point labelled with its rate; closed-loop points as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, entry in result["servers"].items():
        poisson = [p for p in entry.get("points", []) if p["mode"] == "poisson" and p["output_throughput"]]
        closed = [p for p in entry.get("points", []) if p["mode"] == "concurrency" and p["output_throughput"]]
        for ax, metric, stat in ((axes[0], "ttft_ms", "p99"), (axes[1], "tpot_ms", "mean")):
            line = None
            if poisson:
                xs = [p["output_throughput"] for p in poisson]
                ys = [p[metric][stat] for p in poisson]
                (line,) = ax.plot(xs, ys, marker="o", label=name)
                for p, x, y in zip(poisson, xs, ys):
                    if y is not None:
                        ax.annotate(f"{p['rate']:g}/s", (x, y), textcoords="offset points", xytext=(4, 4),
                                    fontsize=7)
            for p in closed:
                ax.plot([p["output_throughput"]], [p[metric][stat]], marker="*", markersize=11, linestyle="none",
                        color=line.get_color() if line is not None else None,
                        label=f"{name}, {p['concurrency']} clients")
    axes[0].set_ylabel("p99 TTFT (ms)")
    axes[1].set_ylabel("mean TPOT (ms)")
    for ax in axes:
        ax.set_xlabel("output throughput (tok/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cfg = result["config"]
    fig.suptitle(f"{Path(cfg['model']).name}: {cfg['input_len']} in / {cfg['output_len']} out tokens, "
                 f"{cfg['threads']} threads, Poisson rates {', '.join(f'{r:g}' for r in cfg['rates'])} req/s",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(result: dict[str, Any]) -> None:
    """One line per server and load point, then the ratios."""
    head = (f"{'server':>18} {'load':>6} {'ok':>4} {'fail':>4} {'req/s':>7} {'out tok/s':>9} {'TTFT p50':>9} "
            f"{'TTFT p99':>9} {'TPOT mean':>9} {'ITL p99':>8} {'E2E p99':>9} {'goodput':>7}")
    print(head)

    def fmt(value: float | None, width: int, digits: int = 1) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for name, entry in result["servers"].items():
        if entry.get("error"):
            print(f"{name:>18} error: {entry['error'][:300]}")
        for p in entry.get("points", []):
            load = f"c{p['concurrency']}" if p["mode"] == "concurrency" else f"{p['rate']:g}/s"
            print(f"{name:>18} {load:>6} {p['completed']:>4} {p['failed']:>4} {fmt(p['request_throughput'], 7, 3)} "
                  f"{fmt(p['output_throughput'], 9)} {fmt(p['ttft_ms']['p50'], 9)} {fmt(p['ttft_ms']['p99'], 9)} "
                  f"{fmt(p['tpot_ms']['mean'], 9)} {fmt(p['itl_ms']['p99'], 8)} {fmt(p['e2el_ms']['p99'], 9)} "
                  f"{fmt(p['goodput'], 7, 3)}")
    for key, value in result["ratios"].items():
        print(f"{key:>44}: {value}")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = bench_parser(__doc__)
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M)")
    ap.add_argument("--servers", default=f"{LLAMA_SERVER},{BASTION}", help="comma list, run in this order")
    ap.add_argument("--concurrency", type=_ints, default=[64], help="closed-loop client counts, comma list")
    ap.add_argument("--rates", type=_floats, default=[], help="Poisson request rates (req/s), comma list")
    ap.add_argument("--num-prompts", type=int, default=256, help="requests per closed-loop point")
    ap.add_argument("--poisson-prompts", type=int, default=None, help="requests per Poisson rate (default --num-prompts)")
    ap.add_argument("--input-len", type=int, default=128, help="prompt tokens")
    ap.add_argument("--output-len", type=int, default=64, help="output tokens (EOS ignored)")
    ap.add_argument("--max-num-seqs", type=int, default=64, help="bastion --max-num-seqs and llama-server -np")
    ap.add_argument("--threads", type=int, default=None, help="server threads (default: all cores)")
    ap.add_argument("--warmup", type=int, default=2, help="sequential warm-up requests per server")
    ap.add_argument("--seed", type=int, default=0, help="seed of the Poisson inter-arrival times")
    ap.add_argument("--slo", action="append", default=[], help="KEY=MS (ttft_ms, tpot_ms, e2el_ms) for goodput")
    ap.add_argument("--ttft-knee-ms", type=float, default=2000.0,
                    help="p99 TTFT ratio at the highest rate where llama-server's p99 TTFT is under this")
    ap.add_argument("--in-process", action="store_true", help="also run the closed loop through in-process AsyncLLM")
    ap.add_argument("--bastion-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an EngineConfig field for bastion's server and the in-process engine (repeatable)")
    ap.add_argument("--server-timeout", type=float, default=600.0, help="seconds a server may take to get ready")
    ap.add_argument("--request-timeout", type=float, default=1800.0, help="seconds one request may take")
    ap.add_argument("--plot", default=None, metavar="PATH.png", help="write the latency-throughput plot here")
    args = ap.parse_args(argv)
    args.threads = args.threads or num_cores()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in args.servers:
        if name not in (LLAMA_SERVER, BASTION):
            ap.error(f"--servers: unknown server {name!r} (llama-server, bastion)")
    if args.num_prompts < 1 or args.input_len < 1 or args.output_len < 1 or args.max_num_seqs < 1:
        ap.error("--num-prompts, --input-len, --output-len and --max-num-seqs must be >= 1")
    if any(c < 1 for c in args.concurrency) or any(r <= 0 for r in args.rates):
        ap.error("--concurrency values must be >= 1 and --rates > 0")
    try:
        args.slos = dict(parse_slo(s) for s in args.slo)
        args.options = parse_options(args.bastion_option)
    except ValueError as exc:
        ap.error(str(exc))
    return args


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every server (then the in-process engine) over every load point; figures and ratios."""
    if args.model is None:
        from bastion.model import default_model_path

        model = Path(default_model_path())
    else:
        model = Path(args.model).resolve()  # the servers run in a scratch directory of their own
    options = {"max_num_seqs": str(args.max_num_seqs), "num_threads": str(args.threads)} | args.options
    points = load_points(args)
    prompts = prompts_for(points, load_tokenizer(model), args.input_len, args.warmup)
    servers: dict[str, dict[str, Any]] = {}
    for name in args.servers:
        servers[name] = await bench_server(name, args, model, options, points, prompts, args.slos)
    if args.in_process:
        servers[INPROCESS] = await bench_inprocess(args, model, options, points, prompts, args.slos)
    return {
        "config": {"model": str(model), "input_len": args.input_len, "output_len": args.output_len,
                   "concurrency": args.concurrency, "rates": args.rates, "num_prompts": args.num_prompts,
                   "poisson_prompts": args.poisson_prompts or args.num_prompts, "max_num_seqs": args.max_num_seqs,
                   "threads": args.threads, "seed": args.seed, "slos": args.slos, "warmup": args.warmup,
                   "bastion_options": options, "llama_server_version": llama_server_version()},
        "servers": servers,
        "ratios": compute_ratios(servers, args.concurrency, args.rates, args.ttft_knee_ms),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print its figures, draw the plot when asked."""
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = asyncio.run(measure(args))
    if args.plot:
        plot(result, args.plot)
    emit(result, args.json, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
