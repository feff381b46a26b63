"""Decode-attention bandwidth on a GPU: bastion's CUDA kernel, bastion's Triton kernel and torch SDPA.

Llama-3.1-8B shapes (32 query heads, 8 KV heads, head_dim 128, bf16, block_size 16), one layer,
batch {1, 16, 64, 256} x context {512, 2k, 8k}, every sequence at the full context. Decode attention
is memory-bound, so each kernel is scored by the KV bytes it must read (batch * ctx * 2 * 8 * 128 * 2
bytes) over its median time, as a percentage of a device-to-device copy measured in the same run.
Times come from CUDA events around the kernel alone, with L2 flushed before every repetition.

SDPA runs on K/V already gathered into dense [batch, kv_heads, ctx, head_dim] tensors (the gather is
not timed): it is the "KV was contiguous" reference, not a paged kernel.

Usage: python -m bench.bench_kernels [--json] [--reps 30] [--batches 1 64] [--contexts 2048]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bench.common import bench_parser, emit

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
DTYPE = torch.bfloat16
COPY_BYTES = 1 << 30


@dataclass
class Result:
    """One (shape, method) measurement."""

    batch: int
    context: int
    method: str
    median_us: float
    min_us: float
    gbps: float
    pct_of_copy: float
    max_abs_diff_vs_sdpa: float


class L2Flusher:
    """Overwrites a buffer of twice the L2 size (at least 256 MiB, as triton.testing.do_bench) before each
    repetition, so no KV bytes survive in L2.

    The flush also keeps the GPU busy (~0.1 ms) while the host launches the timed call: the start event
    then fires right before the kernel, and the ~20-50 us of Python launch overhead of the small cases
    (batch 1 x 512 reads 2 MiB: about 1 us of HBM time) stays out of the measured interval.
    """

    MIN_BYTES = 256 << 20

    def __init__(self, device: torch.device) -> None:
        l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
        self.buffer = torch.empty(max(2 * l2_bytes, self.MIN_BYTES), dtype=torch.uint8, device=device)

    def flush(self) -> None:
        self.buffer.zero_()


def time_us(fn: Callable[[], object], flusher: L2Flusher, reps: int, warmup: int) -> list[float]:
    """Per-repetition kernel times in microseconds (events bracket ``fn`` only, not the flush)."""
    for _ in range(warmup):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        flusher.flush()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) * 1e3 for start, end in events]


def copy_gbps(device: torch.device, flusher: L2Flusher, reps: int, warmup: int) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second), the denominator of pct_of_copy."""
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    times = time_us(lambda: dst.copy_(src), flusher, reps, warmup)
    return 2 * COPY_BYTES / statistics.median(times) / 1e3


def make_case(batch: int, context: int, device: torch.device, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """q, shuffled paged K/V caches, block table, lengths and the dense (gathered) K/V for SDPA."""
    blocks_per_seq = context // BLOCK_SIZE
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.empty(shape, dtype=DTYPE, device=device).normal_(generator=gen)
    v_cache = torch.empty(shape, dtype=DTYPE, device=device).normal_(generator=gen)
    pages = torch.randperm(num_blocks, device=device, generator=gen).to(torch.int32)
    block_table = pages.view(batch, blocks_per_seq)

    def dense(cache: torch.Tensor) -> torch.Tensor:
        return cache[block_table.long()].view(batch, context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()

    return {
        "q": torch.empty(batch, NUM_HEADS, HEAD_DIM, dtype=DTYPE, device=device).normal_(generator=gen),
        "k_cache": k_cache, "v_cache": v_cache, "block_table": block_table,
        "seq_lens": torch.full((batch,), context, dtype=torch.int32, device=device),
        "cu_seqlens_q": torch.arange(batch + 1, dtype=torch.int32, device=device),
        "k_dense": dense(k_cache), "v_dense": dense(v_cache),
    }


def paged_methods(case: dict[str, torch.Tensor]) -> dict[str, Callable[[], torch.Tensor]]:
    """The paged kernels available here, each as a no-argument call writing into one output buffer."""
    out = torch.empty_like(case["q"])
    args = (case["q"], case["k_cache"], case["v_cache"], case["block_table"], case["seq_lens"], case["cu_seqlens_q"])
    methods: dict[str, Callable[[], torch.Tensor]] = {}
    from bastion.ops import cuda_backend

    methods["bastion_cuda"] = lambda: cuda_backend.paged_attention(*args, out=out)
    try:
        from bastion.kernels import paged_attention as triton_paged_attention
    except ImportError as exc:
        print(f"bastion.kernels.paged_attention not importable, skipping Triton: {exc}", file=sys.stderr)
    else:
        from bastion.ops.gpu import sm_count

        num_sms = sm_count(case["q"].device)  # as the ops backend
        methods["bastion_triton"] = lambda: triton_paged_attention(*args, out=out, num_sms=num_sms)
    return methods


def sdpa_method(case: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """torch SDPA over the pre-gathered dense K/V; returns [batch, heads, head_dim]."""
    q = case["q"].unsqueeze(2)  # [batch, heads, 1, head_dim]
    return lambda: F.scaled_dot_product_attention(q, case["k_dense"], case["v_dense"], enable_gqa=True).squeeze(2)


def bench_case(
    batch: int, context: int, copy_rate: float, flusher: L2Flusher, reps: int, warmup: int, gen: torch.Generator
) -> list[Result]:
    case = make_case(batch, context, flusher.buffer.device, gen)
    kv_bytes = batch * context * 2 * NUM_KV_HEADS * HEAD_DIM * DTYPE.itemsize
    methods = {**paged_methods(case), "torch_sdpa": sdpa_method(case)}
    reference = methods["torch_sdpa"]().float()
    results = []
    for name, fn in methods.items():
        diff = (fn().float() - reference).abs().max().item()
        times = time_us(fn, flusher, reps, warmup)
        median = statistics.median(times)
        gbps = kv_bytes / median / 1e3
        results.append(Result(batch, context, name, median, min(times), gbps, 100 * gbps / copy_rate, diff))
    return results


def print_table(figures: dict) -> None:
    """One row per (shape, method): median time, bandwidth, share of the copy rate, difference to SDPA."""
    print(f"\ndevice-to-device copy {figures['copy_gbps']:.0f} GB/s (100%)")
    print(f"{'batch':>5} {'ctx':>6} {'method':<15} {'median us':>10} {'GB/s':>8} {'% copy':>7} {'|diff|':>8}")
    for r in figures["results"]:
        print(f"{r['batch']:>5} {r['context']:>6} {r['method']:<15} {r['median_us']:>10.1f} {r['gbps']:>8.0f} "
              f"{r['pct_of_copy']:>6.1f}% {r['max_abs_diff_vs_sdpa']:>8.1e}")


def main() -> None:
    """Parse arguments, run the sweep, print the table (or JSON)."""
    parser = bench_parser(__doc__)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU: torch.cuda.is_available() is False on this host")
    import bastion

    if not bastion.cuda_available():
        sys.exit("bench_kernels.py needs bastion built with BASTION_CUDA=ON (bastion.cuda_available() is False)")
    if any(c % BLOCK_SIZE for c in args.contexts):
        sys.exit(f"--contexts must be multiples of the block size {BLOCK_SIZE}")

    device = torch.device("cuda", torch.cuda.current_device())
    flusher = L2Flusher(device)
    copy_rate = copy_gbps(device, flusher, args.reps, args.warmup)
    gen = torch.Generator(device=device).manual_seed(0)
    results = []
    for batch in args.batches:
        for context in args.contexts:
            results.extend(bench_case(batch, context, copy_rate, flusher, args.reps, args.warmup, gen))
            torch.cuda.empty_cache()
    figures = {
        "copy_gbps": copy_rate,
        "shape": {"num_heads": NUM_HEADS, "num_kv_heads": NUM_KV_HEADS, "head_dim": HEAD_DIM,
                  "block_size": BLOCK_SIZE, "dtype": str(DTYPE)},
        "results": [asdict(r) for r in results],
    }
    emit(figures, args.json, human=print_table)


if __name__ == "__main__":
    main()
