"""Decode-phase throughput of small batches: the block-kernel threshold, tuned vs fixed values.

For each number of requests in flight N, engines that differ only in ``block_kernel_max_tokens``
take turns round by round: the tuned default (``quant_linear.kernel_max_tokens(threads)``), the old
fixed 8, and 0 (every step on the dequantized-panel GEMM). Steps at or below the threshold run one
C++ decoder call over the GGUF blocks; bigger ones go module by module through the panel GEMM.
Reports median decode-only tok/s (the clock starts once every prefill is done) and ratios.

    python -m bench.bench_small_batches [--sizes 4 12 24] [--threads N] [--rounds 3] [--json]
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import bench_parser, build_prompts, emit, run_bastion_decode_phase, use_threads


def run(sizes: list[int], max_tokens: int, rounds: int, threads: int) -> dict[str, Any]:
    """Median decode-phase tok/s per batch size and threshold."""
    import bastion
    from bastion.model.quant_linear import kernel_max_tokens

    tuned = kernel_max_tokens(threads)
    thresholds = sorted({0, 8, tuned})
    engines = {t: bastion.LLM(num_threads=threads, enable_prefix_caching=False, block_kernel_max_tokens=t,
                              kv_cache_memory_mb=256) for t in thresholds}
    result: dict[str, Any] = {"threads": threads, "tuned_threshold": tuned,
                              "workload": f"N requests x 64 prompt x {max_tokens} output, decode phase"}
    for size in sizes:
        prompts = build_prompts(engines[tuned].tokenizer, size, 64)
        figures: dict[int, list[float]] = {t: [] for t in thresholds}
        for _ in range(rounds):
            for t, llm in engines.items():
                figures[t].append(run_bastion_decode_phase(llm, prompts, max_tokens))
        for t in thresholds:
            result[f"n{size}_threshold{t}_tok_s"] = round(statistics.median(figures[t]), 1)
        for t in thresholds:
            if t != tuned:
                result[f"n{size}_ratio_tuned_vs_{t}"] = round(result[f"n{size}_threshold{tuned}_tok_s"]
                                                              / result[f"n{size}_threshold{t}_tok_s"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the figures."""
    parser = bench_parser(__doc__, threads=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 12, 24])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    emit(run(args.sizes, args.max_tokens, args.rounds, use_threads(args.threads)), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
