"""Single-stream decode with and without the quantized-block path (and llama-cpp-python, if importable).

Same run, same engine: the quantized path is switched off by setting its token threshold to 0, so
the only difference is whether small steps read the GGUF's Q4_1/Q8_0 blocks or the fp32 weights.
Rounds alternate the two modes and report medians, so a noisy neighbour hits both alike.

    python bench/bench_quant_decode.py [--max-tokens 128] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from common import (
    LlamaCppPeer,
    build_prompts,
    emit,
    llamacpp_available,
    num_cores,
    pct,
    run_bastion_single,
    warm_up,
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Median single-stream decode tok/s of bastion (quantized on/off) and of llama-cpp-python."""
    import bastion
    import torch
    from bastion.model import default_model_path
    from bastion.model.quant_weights import DEFAULT_MAX_TOKENS, quantized_weights, set_max_tokens

    cores = num_cores()
    torch.set_num_threads(cores)
    llm = bastion.LLM(num_threads=cores, enable_prefix_caching=False)
    model = llm.engine.runner.model
    prompt = build_prompts(llm.tokenizer, 1, args.prompt_tokens)[0]
    warm_up(llm, [prompt])
    figures: dict[str, list[float]] = {"quantized": [], "fp32": []}
    for _ in range(args.rounds):
        for mode, threshold in (("quantized", DEFAULT_MAX_TOKENS), ("fp32", 0)):
            set_max_tokens(model, threshold)
            figures[mode].append(run_bastion_single(llm, prompt, args.max_tokens))
    set_max_tokens(model, DEFAULT_MAX_TOKENS)
    result: dict[str, Any] = {
        "workload": f"1 req x {args.prompt_tokens} prompt x {args.max_tokens} output, greedy, ignore_eos",
        "cores": cores, "date": time.strftime("%Y-%m-%d %H:%M"),
        "quantized_weights": len(quantized_weights(model)),
        "bastion_quantized_tok_s": round(statistics.median(figures["quantized"]), 2),
        "bastion_fp32_tok_s": round(statistics.median(figures["fp32"]), 2),
    }
    result["speedup"] = round(result["bastion_quantized_tok_s"] / result["bastion_fp32_tok_s"], 3)
    if llamacpp_available():
        peer = LlamaCppPeer(default_model_path(), n_ctx=args.prompt_tokens + args.max_tokens + 64, n_threads=cores)
        peer.generate(prompt[:16], 2)  # warm-up
        tpots = [peer.generate(prompt, args.max_tokens)[1] for _ in range(args.rounds)]
        result["llamacpp_tok_s"] = round(1.0 / pct([t for t in tpots if t], 50), 2)
        result["ratio_vs_llamacpp"] = round(result["bastion_quantized_tok_s"] / result["llamacpp_tok_s"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
