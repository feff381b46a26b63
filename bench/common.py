"""What every benchmark shares: its command line, its output, and the workloads of the end-to-end ones.

Every ``bench/`` script parses its options with ``bench_parser`` and prints through ``emit``: with
``--json`` stdout carries exactly one JSON object, the figures plus an ``environment`` block (date,
CPU, threads, versions: ``environment()``), and nothing else; without it, aligned ``key: value``
lines (or the script's own table) after the same environment. The end-to-end benchmarks and
``tests/bench`` also share the prompts, latency statistics and the bastion and llama-cpp-python runs
here, so all of them measure exactly the same workload. Every figure comes from wall-clock times of
a real run; nothing is estimated.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

TokenPrompts = list[list[int]]

_FILLER = ("The committee reviewed the quarterly figures, the shipping schedule and the new safety rules "
           "before lunch; afterwards each team explained what had changed since spring and why. ")


def num_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set of process ``pid`` (``VmHWM`` of /proc/PID/status, in kB) in MB; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def build_prompts(tokenizer: Any, n: int, length: int) -> TokenPrompts:
    """``n`` prompts of exactly ``length`` token ids, different within their first KV block.

    Each prompt starts with its own number, so neither bastion's prefix cache nor llama.cpp's
    prefix reuse can skip work that the other engine must do.
    """
    base = tokenizer.encode(_FILLER * (length // 8 + 4), add_special_tokens=False)
    prompts = []
    for i in range(n):
        head = tokenizer.encode(f"Report {i * 7919 % 100003}: ", add_special_tokens=False)
        ids = (head + base[i % 17:])[:length]
        if len(ids) != length:
            raise ValueError(f"could not build a {length}-token prompt (got {len(ids)})")
        prompts.append(ids)
    return prompts


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; NaN when empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class RunResult:
    """Throughput and per-request latency of one engine over one workload."""

    name: str
    wall_s: float
    prompt_tokens: int
    output_tokens: int
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)

    @property
    def output_tok_s(self) -> float:
        """Generated tokens per wall-clock second (prefill time included)."""
        return self.output_tokens / self.wall_s

    @property
    def total_tok_s(self) -> float:
        """Prompt plus generated tokens per wall-clock second."""
        return (self.prompt_tokens + self.output_tokens) / self.wall_s

    def summary(self) -> dict[str, float]:
        """Flat figures for JSON: tok/s, TTFT and TPOT p50/p99 in milliseconds."""
        out = {"output_tok_s": round(self.output_tok_s, 2), "total_tok_s": round(self.total_tok_s, 2),
               "wall_s": round(self.wall_s, 3), "output_tokens": self.output_tokens}
        for key, values in (("ttft", self.ttft_s), ("tpot", self.tpot_s)):
            if values:
                out[f"{key}_p50_ms"] = round(pct(values, 50) * 1e3, 2)
                out[f"{key}_p99_ms"] = round(pct(values, 99) * 1e3, 2)
        return out


def from_request_outputs(name: str, outputs: Sequence[Any], wall_s: float) -> RunResult:
    """A ``RunResult`` from bastion ``RequestOutput``s (TTFT/TPOT from their metrics)."""
    res = RunResult(name, wall_s, sum(len(o.prompt_token_ids) for o in outputs),
                    sum(o.metrics.num_generated_tokens for o in outputs))
    for o in outputs:
        if o.metrics.time_to_first_token is not None:
            res.ttft_s.append(o.metrics.time_to_first_token)
        if o.metrics.time_per_output_token is not None:
            res.tpot_s.append(o.metrics.time_per_output_token)
    return res


def greedy_params(max_tokens: int) -> Any:
    """Greedy, fixed-length sampling parameters (``ignore_eos``) for bastion."""
    from bastion import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def run_bastion_batch(llm: Any, prompts: TokenPrompts, max_tokens: int, name: str = "bastion") -> RunResult:
    """All prompts through one ``LLM.generate`` call (continuous batching)."""
    start = time.perf_counter()
    outputs = llm.generate(prompts, greedy_params(max_tokens), use_tqdm=False)
    return from_request_outputs(name, outputs, time.perf_counter() - start)


def run_bastion_single(llm: Any, prompt: list[int], max_tokens: int) -> float:
    """Single-stream decode tok/s of one request (1 / its TPOT)."""
    out = llm.generate([prompt], greedy_params(max_tokens), use_tqdm=False)[0]
    tpot = out.metrics.time_per_output_token
    return 1.0 / tpot if tpot else float("nan")


def run_bastion_decode_phase(llm: Any, prompts: TokenPrompts, max_tokens: int) -> float:
    """Decode-only tok/s with every prompt in flight: the figure llama.cpp's batched-bench reports.

    Drives the engine step by step: the clock starts once every request has its first token (all
    prefills done) and stops when the last finishes; only tokens generated in between count.
    """
    engine = llm.engine
    params = greedy_params(max_tokens)
    ids = [f"decode-phase-{i}" for i in range(len(prompts))]
    for rid, prompt in zip(ids, prompts):
        engine.add_request(llm.processor.process_inputs(rid, prompt, params))
    started: set[str] = set()
    while len(started) < len(ids):
        started.update(out.request_id for out in engine.step() if out.token_ids)
    produced_before = {rid: len(engine.requests[rid].output_token_ids) for rid in ids if rid in engine.requests}
    total_before = sum(produced_before.values()) + max_tokens * (len(ids) - len(produced_before))
    start = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    elapsed = time.perf_counter() - start
    return (max_tokens * len(ids) - total_before) / elapsed


def warm_up(llm: Any, prompts: TokenPrompts) -> None:
    """One short batched call so lazy imports, kernels and allocator pools are ready."""
    llm.generate([p[:32] for p in prompts[:4]], greedy_params(4), use_tqdm=False)


def llamacpp_available() -> bool:
    """Whether llama-cpp-python can be imported."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppPeer:
    """llama-cpp-python on the same GGUF, serving requests one after another (its Python API)."""

    def __init__(self, model_path: str | os.PathLike[str], n_ctx: int, n_threads: int | None = None) -> None:
        """Load the GGUF with ``n_threads`` (default: all cores) and a context of ``n_ctx`` tokens."""
        from llama_cpp import Llama

        threads = n_threads or num_cores()
        self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def generate(self, prompt: list[int], max_tokens: int) -> tuple[float, float | None, int]:
        """Greedy-generate ``max_tokens`` (EOS ignored) from a fresh context: ``(ttft, tpot, n)``."""
        self.llm.reset()  # no prefix reuse between requests: every prompt is prefilled in full
        start = time.perf_counter()
        first = last = start
        n = 0
        for _ in self.llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            n += 1
            last = time.perf_counter()
            if n == 1:
                first = last
            if n >= max_tokens:
                break
        tpot = (last - first) / (n - 1) if n > 1 else None
        return first - start, tpot, n

    def run(self, prompts: TokenPrompts, max_tokens: int, progress: bool = False) -> RunResult:
        """Every prompt in turn; TTFT is measured from the start of the whole run, like bastion's batch."""
        res = RunResult("llama-cpp-python", 0.0, sum(len(p) for p in prompts), 0)
        start = time.perf_counter()
        for prompt in tqdm(prompts, desc="llama-cpp-python", unit="req", disable=not progress):
            queued = time.perf_counter() - start
            ttft, tpot, n = self.generate(prompt, max_tokens)
            res.ttft_s.append(queued + ttft)
            if tpot is not None:
                res.tpot_s.append(tpot)
            res.output_tokens += n
        res.wall_s = time.perf_counter() - start
        return res


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """Median of ``a / b`` over interleaved measurement pairs (robust to a noisy neighbour)."""
    return statistics.median(a / b for a, b in pairs)


def bench_parser(description: str, *, threads: bool = False) -> argparse.ArgumentParser:
    """The argument parser of a benchmark: ``description`` (its module docstring) and the shared options.

    ``--json``: print one JSON object on stdout (see ``emit``). With ``threads``, also ``--threads N``:
    the threads of torch and the C++ kernels (default: every core; see ``use_threads``).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the figures and an 'environment' block) and nothing else")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch and C++ kernel threads (default: all cores)")
    return parser


def use_threads(requested: int | None) -> int:
    """Set torch to ``requested`` threads (every core when None) and return that count."""
    import torch

    threads = requested or num_cores()
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def environment() -> dict[str, Any]:
    """Where and when the figures were measured: UTC date, commit, CPU model, usable cores, torch threads
    (as the run left them), the GPU when torch sees one, and the versions of Python and the packages
    that decide the figures (None: not installed)."""
    import torch

    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(), "cpu": _cpu_model(),
        "cores": num_cores(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("bastion", "torch", "triton", "numpy", "llama-cpp-python",
                                                        "transformers")},
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Print ``result`` with the ``environment()`` block: as one JSON object on stdout (``--json``), or
    as aligned ``key: value`` lines (``human(result)`` instead of the figures' lines, when given)."""
    env = environment()
    if as_json:
        print(json.dumps({"environment": env, **result}, sort_keys=True))
        return
    for key, value in env.items():
        print(f"{key:>28}: {value}")
    if human is not None:
        human(result)
        return
    for key, value in result.items():
        print(f"{key:>28}: {value}")


# cProfile function name -> category of the bastion profile breakdown (first match wins)
_CATEGORIES = (
    ("GEMM (torch linear/embedding)", ("built-in method torch._C._nn.linear", "built-in method torch.embedding",
                                       "method 'index_select'")),
    ("attention (C++ paged attn + KV write)", ("paged_attention", "reshape_and_cache")),
    ("rotary", ("rotate_neox_", "rope_tables", "rotary_embedding", "_rotate")),
    ("norm + SiLU (C++)", ("_core.cpu.rms_norm", "_core.cpu.silu_and_mul")),
    ("sampling", ("sampler.py", "ops/sampling.py", "argmax")),
    ("scheduler (C++ step/update)", ("method 'step' of 'bastion._core", "method 'update' of 'bastion._core")),
    ("detokenize + stop checks", ("output_processor.py", "tokenizer.py")),
)


def profile_breakdown(fn: Any) -> dict[str, float]:
    """Run ``fn()`` under cProfile; return the share (%) of its wall time per category of work.

    Leaf (self) times of C/C++ calls are attributed to categories; everything else, i.e. Python
    interpreter time in the model, engine and op wrappers, is "Python overhead".
    """
    import cProfile
    import pstats

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.runcall(fn)
    wall = time.perf_counter() - start
    shares = dict.fromkeys([name for name, _ in _CATEGORIES], 0.0)
    accounted = 0.0
    for (filename, _, func), (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        label = f"{filename}:{func}"
        for name, needles in _CATEGORIES:
            if any(n in label for n in needles):
                shares[name] += tottime
                accounted += tottime
                break
    total = sum(st[2] for st in pstats.Stats(prof).stats.values())  # type: ignore[attr-defined]
    shares["Python overhead (model/engine/op wrappers)"] = total - accounted
    return {k: round(100.0 * v / wall, 1) for k, v in shares.items()} | {"wall_s": round(wall, 2)}
