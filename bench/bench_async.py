"""``AsyncLLM`` streaming versus ``LLM.generate`` on the same requests, plus the event loop's worst stall.

N concurrent streams (default 64) of P prompt tokens (default 128) generating M tokens each
(default 64, greedy, EOS ignored) go through ``bastion.AsyncLLM.generate`` (one task per stream,
delta outputs), then the same requests through ``bastion.LLM.generate`` in the same process. A
ticker task sleeps 1 ms in a loop during the async run and records how late it wakes up: the
event loop's worst stall while the engine thread works (target < 20 ms). Targets: async
throughput within 10% of the batch path.

    python -m bench.bench_async [--json] [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from typing import Any

from bench.common import (
    RunResult,
    bench_parser,
    build_prompts,
    emit,
    greedy_params,
    pct,
    run_bastion_batch,
    warm_up,
)


class StallTicker:
    """Measures event-loop lateness: how much later than asked ``asyncio.sleep(period)`` returns."""

    def __init__(self, period_s: float = 0.001) -> None:
        """Tick every ``period_s`` seconds once started."""
        self.period_s = period_s
        self.lateness_s: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self.lateness_s.append(time.perf_counter() - start - self.period_s)

    def start(self) -> None:
        """Begin ticking on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop ticking."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def worst_ms(self) -> float:
        """The worst lateness seen, in milliseconds."""
        return 1e3 * max(self.lateness_s, default=0.0)


async def _stream(engine: Any, prompt: list[int], params: Any, rid: str, start: float,
                  res: RunResult) -> None:
    """Consume one stream; TTFT/TPOT from the client's side (arrival = the common start)."""
    first = last = None
    n = 0
    async for out in engine.generate(prompt, params, request_id=rid):
        now = time.perf_counter()
        new = len(out.token_ids)
        if new:
            first = now if first is None else first
            last = now
            n += new
    res.output_tokens += n
    if first is not None:
        res.ttft_s.append(first - start)
        if n > 1:
            res.tpot_s.append((last - first) / (n - 1))


async def run_async(engine: Any, prompts: list[list[int]], max_tokens: int, tag: str) -> tuple[RunResult, float]:
    """All prompts as concurrent streams; returns the run and the loop's worst stall (ms)."""
    params = dataclasses.replace(greedy_params(max_tokens), output_kind="delta")
    res = RunResult("bastion-async", 0.0, sum(len(p) for p in prompts), 0)
    ticker = StallTicker()
    ticker.start()
    start = time.perf_counter()
    await asyncio.gather(*(_stream(engine, p, params, f"{tag}-{i}", start, res) for i, p in enumerate(prompts)))
    res.wall_s = time.perf_counter() - start
    await ticker.stop()
    return res, ticker.worst_ms


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Interleave async and batch rounds on the same requests; report medians and ratios."""
    import bastion

    common = {"max_num_seqs": max(args.requests, 1), "max_num_batched_tokens": args.max_num_batched_tokens,
              "enable_prefix_caching": False}  # repeated rounds must prefill in full
    engine = bastion.AsyncLLM(**common)
    llm = bastion.LLM(**common)
    prompts = build_prompts(llm.tokenizer, args.requests, args.prompt_tokens)
    warm_up(llm, prompts)
    await run_async(engine, [p[:32] for p in prompts[:4]], 4, "warm")
    ratios, stalls, async_runs, batch_runs = [], [], [], []
    for r in range(args.rounds):
        a, stall = await run_async(engine, prompts, args.max_tokens, f"r{r}")
        b = await asyncio.to_thread(run_bastion_batch, llm, prompts, args.max_tokens)
        async_runs.append(a)
        batch_runs.append(b)
        stalls.append(stall)
        ratios.append(a.output_tok_s / b.output_tok_s)
    await engine.close()
    best_a = max(async_runs, key=lambda x: x.output_tok_s)
    best_b = max(batch_runs, key=lambda x: x.output_tok_s)
    out: dict[str, Any] = {
        "workload": f"{args.requests} streams x {args.prompt_tokens} prompt x {args.max_tokens} output, greedy",
        "rounds": args.rounds,
        "async_tok_s": round(statistics.median(x.output_tok_s for x in async_runs), 2),
        "batch_tok_s": round(statistics.median(x.output_tok_s for x in batch_runs), 2),
        "async_over_batch": round(statistics.median(ratios), 3),
        "loop_worst_stall_ms": round(max(stalls), 2),
        "loop_stall_p50_of_rounds_ms": round(pct(stalls, 50), 2),
    }
    out.update({f"async_{k}": v for k, v in best_a.summary().items() if "_ms" in k})
    out.update({f"batch_{k}": v for k, v in best_b.summary().items() if "_ms" in k})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick``: 8 streams x 32 prompt x 16 output tokens)."""
    ap = bench_parser(__doc__)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved async/batch rounds (medians reported)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.prompt_tokens, args.max_tokens = 8, 32, 16
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    emit(asyncio.run(measure(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
