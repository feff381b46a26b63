"""Gateway overhead: N concurrent streams through the Gateway (all checks on) vs AsyncLLM directly.

Both sides run the same requests (greedy, ``ignore_eos``, fixed ``max_tokens``, so they produce the
same number of tokens) on the same engine in the same process, alternating rounds so drift in the
machine's load hits both. "All checks on" = rate limiter, default guardrail pipeline (input and
streaming output), circuit breaker fed by engine health, hooks, and a hash-chained audit log with
``fsync="always"``. Prints the throughput loss in percent (target < 5%).

    python -m bench.bench_gateway [--streams 64] [--max-tokens 32] [--rounds 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_parser, emit, use_threads

PROMPTS = [
    "Write a short note about the sea number {i}.",
    "List three facts about mountains, item {i}.",
    "Explain why the sky looks blue, version {i}.",
    "Describe a quiet morning in a small town, take {i}.",
]


def _params(max_tokens: int) -> Any:
    from bastion.sampling import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, output_kind="delta")


async def _direct_round(llm: Any, prompts: list[str], max_tokens: int, tag: str) -> tuple[int, float]:
    params = _params(max_tokens)

    async def one(i: int, prompt: str) -> int:
        """Stream one request straight from the engine; its output token count."""
        n = 0
        async for out in llm.generate(prompt, params, request_id=f"{tag}-{i}"):
            n += len(out.token_ids)
        return n

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return sum(counts), time.perf_counter() - start


async def _gateway_round(gateway: Any, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    params = _params(max_tokens)

    async def one(i: int, prompt: str) -> int:
        """Stream one request through the Gateway; its output token count."""
        n = 0
        async for delta in gateway.stream(prompt, params, user=f"user-{i % 8}", tenant="bench"):
            n = delta.output_tokens if delta.finished else n
        return n

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return sum(counts), time.perf_counter() - start


class InstantBackend:
    """A Backend that answers at once with ``max_tokens`` one-word chunks: isolates Gateway CPU cost."""

    max_context = None

    def __init__(self) -> None:
        from bastion.audit import ModelIdentity

        self.model_info = ModelIdentity(name="instant")

    async def stream(self, request: Any) -> Any:
        """Yield ``max_tokens`` chunks of one word and one token id each."""
        from bastion.gateway import BackendChunk

        n = request.params.max_tokens
        for i in range(n):
            yield BackendChunk(" word", (i,), 1, finish_reason="length" if i == n - 1 else None)
            await asyncio.sleep(0)  # a real backend yields to the loop between tokens

    async def abort(self, request_id: str) -> None:
        """Nothing to stop."""

    def health(self) -> None:
        """No engine-health signals."""
        return None


async def gateway_cpu_cost(args: argparse.Namespace, audit_path: Path) -> float:
    """CPU microseconds (all threads of this process) the Gateway spends per streamed token, all
    checks on, with a zero-cost backend; CPU time, not wall time, so other load on the machine
    does not inflate it."""
    gateway = _build_gateway(InstantBackend(), audit_path)
    prompts = [PROMPTS[i % len(PROMPTS)].format(i=i) for i in range(args.streams)]
    await _gateway_round(gateway, prompts, 4)  # warm-up
    cpu_start = time.process_time()
    tokens, _ = await _gateway_round(gateway, prompts, args.max_tokens)
    gateway.audit.flush()
    cpu = time.process_time() - cpu_start
    await gateway.aclose()
    gateway.audit.close()
    return 1e6 * cpu / tokens


def _build_gateway(llm: Any, audit_path: Path) -> Any:
    from bastion.audit import AuditLog
    from bastion.gateway import Gateway
    from bastion.resilience.guardrails import default_pipeline
    from bastion.resilience.ratelimit import RateLimit, RateLimiter

    limiter = RateLimiter([RateLimit(requests_per_minute=1e6, tokens_per_minute=1e9, scope="user")])
    hooks = {"finished": lambda event: None}
    return Gateway(llm, audit=AuditLog(audit_path, fsync="always"), guardrails=default_pipeline(),
                   rate_limiter=limiter, hooks=hooks)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the figures printed by ``main``."""
    from bastion import AsyncLLM

    llm = AsyncLLM(args.model, max_model_len=256, num_kv_blocks=args.streams * 8, max_num_seqs=args.streams,
                   num_threads=use_threads(args.threads))
    prompts = [PROMPTS[i % len(PROMPTS)].format(i=i) for i in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp:
        audit_path = Path(tmp) / "bench_audit.jsonl"
        gateway = _build_gateway(llm, audit_path)
        await _direct_round(llm, prompts[:4], 4, "warmup")  # first-call costs out of the figures
        direct, through = [], []
        for r in range(args.rounds):
            tokens_d, secs_d = await _direct_round(llm, prompts, args.max_tokens, f"direct{r}")
            tokens_g, secs_g = await _gateway_round(gateway, prompts, args.max_tokens)
            if tokens_d != tokens_g:
                raise RuntimeError(f"token counts differ: direct {tokens_d}, gateway {tokens_g}")
            direct.append(tokens_d / secs_d)
            through.append(tokens_g / secs_g)
        await gateway.aclose()
        gateway.audit.close()
        from bastion.audit import verify

        audit = verify(audit_path)
        await llm.close()  # the idle engine thread stays out of the CPU figure below
        cpu_us = await gateway_cpu_cost(args, Path(tmp) / "cpu_audit.jsonl")
    direct_tps, gateway_tps = statistics.median(direct), statistics.median(through)
    return {
        "streams": args.streams, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "direct_tokens_per_s": round(direct_tps, 1), "gateway_tokens_per_s": round(gateway_tps, 1),
        "throughput_loss_pct": round(100.0 * (direct_tps - gateway_tps) / direct_tps, 2),
        "per_round_direct": [round(x, 1) for x in direct], "per_round_gateway": [round(x, 1) for x in through],
        "audit_records": audit.records, "audit_chain_ok": audit.ok,
        "gateway_cpu_us_per_token": round(cpu_us, 1),
    }


def print_summary(figures: dict[str, Any]) -> None:
    """The figures in words."""
    print(f"{figures['streams']} streams x {figures['max_tokens']} tokens, median of {figures['rounds']} rounds")
    print(f"  AsyncLLM direct : {figures['direct_tokens_per_s']:9.1f} tok/s")
    print(f"  through Gateway : {figures['gateway_tokens_per_s']:9.1f} tok/s  (all checks on)")
    print(f"  throughput loss : {figures['throughput_loss_pct']:6.2f} %  (target < 5%)")
    print(f"  audit trail     : {figures['audit_records']} records, chain ok = {figures['audit_chain_ok']}")
    print(f"  Gateway CPU cost: {figures['gateway_cpu_us_per_token']:6.1f} us/token (zero-cost backend)")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a summary (or JSON)."""
    parser = bench_parser(__doc__, threads=True)
    parser.add_argument("--model", default=None, help="GGUF file or HF directory (default: embedded SmolLM2)")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.streams < 1 or args.max_tokens < 1 or args.rounds < 1:
        parser.error("--streams, --max-tokens and --rounds must be >= 1")
    emit(asyncio.run(run(args)), args.json, human=print_summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
