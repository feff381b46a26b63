"""Benchmark the C++ CPU paged attention against torch SDPA over gathered pages, in the same run.

Shapes are SmolLM2-135M's (9 q heads, 3 kv heads, head_dim 64, fp32, block_size 16): decode at batch
1/16/64 x context 256/1024, plus prefill cases; the two "serve" cases are the 64-request serving
benchmark's steps (16 prompts of 128 tokens prefilled per chunk, then 64-way decode at ~160 tokens). The SDPA baseline pays for gathering the pages into
contiguous [B, Hkv, L, D] tensors, which any paged-cache user of SDPA must do; its GQA uses
``enable_gqa``. Each case also checks that both agree (max abs diff).

    python -m bench.bench_cpu_attention [--json] [--repeats 20] [--threads N]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import bastion.ops as ops
import torch
import torch.nn.functional as F
from bastion.ops import cpu_backend
from tqdm import tqdm

from bench.common import bench_parser, emit, use_threads

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 9, 3, 64, 16


@dataclass
class Case:
    """One benchmark shape: ``batch`` sequences of ``context`` tokens, the last ``queries`` being queries."""

    name: str
    batch: int
    context: int
    queries: int


@dataclass
class Result:
    """Timings (ms; median and best of the repeats) of one case and the derived figures."""

    name: str
    cpu_ms: float
    sdpa_ms: float
    cpu_best_ms: float
    sdpa_best_ms: float
    speedup: float  # sdpa_ms / cpu_ms (medians)
    kv_gbps: float  # K+V bytes read by the C++ kernel per second, at its best time
    max_abs_diff: float


CASES = [
    *(Case(f"decode b={b} ctx={c}", b, c, 1) for b in (1, 16, 64) for c in (256, 1024)),
    Case("prefill b=1 len=512", 1, 512, 512),
    Case("prefill b=4 len=256", 4, 256, 256),
    Case("serve decode b=64 ctx=160", 64, 160, 1),
    Case("serve prefill b=16 len=128", 16, 128, 128),
]


def make_inputs(case: Case) -> dict[str, torch.Tensor]:
    """Random q and caches with each sequence's pages in random order."""
    blocks_per_seq = -(-case.context // BLOCK_SIZE)
    num_blocks = case.batch * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    table = torch.randperm(num_blocks).to(torch.int32).view(case.batch, blocks_per_seq)
    return {
        "q": torch.randn(case.batch * case.queries, NUM_HEADS, HEAD_DIM),
        "k_cache": torch.randn(shape),
        "v_cache": torch.randn(shape),
        "block_table": table,
        "seq_lens": torch.full((case.batch,), case.context, dtype=torch.int32),
        "cu_seqlens_q": torch.arange(case.batch + 1, dtype=torch.int32) * case.queries,
    }


def sdpa_over_gathered_pages(case: Case, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Gather each sequence's pages, then one batched SDPA call (causal for prefill)."""
    def gather(cache: torch.Tensor) -> torch.Tensor:
        pages = cache[t["block_table"].long()]  # [B, blocks, bs, Hkv, D]
        return pages.flatten(1, 2)[:, : case.context].transpose(1, 2)  # [B, Hkv, L, D]

    q = t["q"].view(case.batch, case.queries, NUM_HEADS, HEAD_DIM).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        q, gather(t["k_cache"]), gather(t["v_cache"]), is_causal=case.queries > 1, enable_gqa=True
    )
    return out.transpose(1, 2).reshape(-1, NUM_HEADS, HEAD_DIM)


def time_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) wall time of ``fn`` in milliseconds after two warm-up calls.

    The best time is the steadier figure on a shared machine, where calls longer than a scheduler
    slice get preempted; the median is what a caller sees on average.
    """
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def run_case(case: Case, repeats: int) -> Result:
    """Time both implementations on one case and compare their outputs."""
    t = make_inputs(case)
    out = torch.empty_like(t["q"])
    args = (t["q"], t["k_cache"], t["v_cache"], t["block_table"], t["seq_lens"], t["cu_seqlens_q"])
    cpu_ms, cpu_best = time_ms(lambda: ops.paged_attention(*args, out=out, backend="cpu"), repeats)
    sdpa_ms, sdpa_best = time_ms(lambda: sdpa_over_gathered_pages(case, t), repeats)
    diff = (ops.paged_attention(*args, backend="cpu") - sdpa_over_gathered_pages(case, t)).abs().max().item()
    kv_bytes = 2 * case.batch * case.context * NUM_KV_HEADS * HEAD_DIM * 4
    return Result(case.name, cpu_ms, sdpa_ms, cpu_best, sdpa_best, sdpa_ms / cpu_ms, kv_bytes / (cpu_best * 1e-3) / 1e9,
                  diff)


def print_table(figures: dict) -> None:
    """One row per case: median (best) times of both, the speedup, KV bandwidth and their difference."""
    print("median (best) ms; speedup = SDPA-over-gathered-pages / C++ medians")
    print(f"{'case':<28}{'C++ ms':>18}{'SDPA ms':>18}{'speedup':>9}{'KV GB/s':>9}{'max|diff|':>11}")
    for r in figures["results"]:
        cpu = f"{r['cpu_ms']:.3f} ({r['cpu_best_ms']:.3f})"
        sdpa = f"{r['sdpa_ms']:.3f} ({r['sdpa_best_ms']:.3f})"
        print(f"{r['name']:<28}{cpu:>18}{sdpa:>18}{r['speedup']:>9.2f}{r['kv_gbps']:>9.2f}{r['max_abs_diff']:>11.1e}")


def main() -> None:
    """Parse arguments, run every case, print a table (or JSON)."""
    parser = bench_parser(__doc__, threads=True)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (median reported)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    cpu_backend.set_num_threads(use_threads(args.threads))
    torch.manual_seed(0)
    results = [run_case(case, args.repeats) for case in tqdm(CASES, desc="cases", disable=args.json)]
    emit({"results": [asdict(r) for r in results]}, args.json, human=print_table)


if __name__ == "__main__":
    main()
