"""Decode-phase throughput of small batches: the GGUF-block path threshold, tuned vs the old fixed 8.

One engine; for each number of requests in flight N, the block-path threshold alternates round by
round between 8 tokens (the earlier fixed value) and ``block_path_max_tokens(threads)`` (steps above
the threshold run torch fp32 GEMMs module by module, steps at or below it one C++ decoder call over
the blocks). Reports median decode-only tok/s (clock starts once every prefill is done) and ratios.

    python bench/bench_small_batches.py [--sizes 4 12 24] [--threads N] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from common import build_prompts, emit, num_cores, run_bastion_decode_phase


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Median decode-phase tok/s per batch size and threshold."""
    import bastion
    import torch
    from bastion.model.cpu_decoder import CpuDecoder
    from bastion.model.quant_weights import block_path_max_tokens, set_max_tokens

    threads = args.threads or num_cores()
    torch.set_num_threads(threads)
    llm = bastion.LLM(num_threads=threads, enable_prefix_caching=False)
    runner = llm.engine.runner
    tuned = block_path_max_tokens(threads)
    thresholds = sorted({8, tuned})
    decoders = {t: CpuDecoder.create(runner.model, runner.kv_caches, max_tokens=t, threads=threads,
                                     activation_bits=16) for t in thresholds}
    result: dict[str, Any] = {"threads": threads, "tuned_threshold": tuned, "date": time.strftime("%Y-%m-%d %H:%M"),
                              "workload": f"N requests x 64 prompt x {args.max_tokens} output, decode phase"}
    for size in args.sizes:
        prompts = build_prompts(llm.tokenizer, size, 64)
        figures: dict[int, list[float]] = {t: [] for t in thresholds}
        for _ in range(args.rounds):
            for t in thresholds:
                runner.cpu_decoder = decoders[t]
                set_max_tokens(runner.model, t)
                figures[t].append(run_bastion_decode_phase(llm, prompts, args.max_tokens))
        for t in thresholds:
            result[f"n{size}_threshold{t}_tok_s"] = round(statistics.median(figures[t]), 1)
        result[f"n{size}_ratio_tuned_vs_8"] = round(result[f"n{size}_threshold{tuned}_tok_s"]
                                                    / result[f"n{size}_threshold8_tok_s"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 12, 24])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
