"""Single-stream CPU decode: bastion's decode paths side by side with llama-cpp-python, same run.

One engine, four modes switched between rounds (so a noisy neighbour hits every mode alike):
  decoder_int16  the default: one C++ call per step over the GGUF blocks, activations rounded to int16
  decoder_exact  the same call with fp32 activations (the dequantized matmul, exact up to order)
  modules        module-by-module bastion.ops calls over the GGUF blocks (fp32 activations)
  fp32_weights   module by module over the dequantized fp32 weights (torch GEMV)
Reports median tok/s (1 / median time per output token) and ratios to llama.cpp.

    python bench/bench_cpu_decode.py [--model GGUF | --requantize Q4_K_M] [--quantize-weights Q8_0]
                                     [--max-tokens 128] [--rounds 3] [--threads N] [--json]

``--requantize Q4_K_M`` first has llama.cpp's own quantizer turn the embedded SmolLM2 into that type
(a temporary file), so the K-quant path can be measured without downloading anything; ``--requantize
F16 --quantize-weights Q8_0`` measures blocks made at load time for an unquantized file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
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

MODES = ("decoder_int16", "decoder_exact", "modules", "fp32_weights")


def _set_mode(llm: Any, decoders: dict[str, Any], mode: str, max_tokens: int) -> None:
    """Point the engine's runner at one decode path."""
    from bastion.model.quant_weights import set_activation_bits, set_max_tokens

    runner = llm.engine.runner
    runner.cpu_decoder = decoders.get(mode)
    set_activation_bits(runner.model, 16 if mode == "decoder_int16" else 32)  # the logits' matmul follows
    set_max_tokens(runner.model, 0 if mode == "fp32_weights" else max_tokens)


def requantize(source: str, ftype_name: str, directory: str) -> str:
    """``source`` requantized by llama.cpp (``LLAMA_FTYPE_MOSTLY_<ftype_name>``) into ``directory``."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.allow_requantize = True
    params.nthread = num_cores()
    target = f"{directory}/smollm2-{ftype_name.lower()}.gguf"
    if llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not requantize {source} to {ftype_name}")
    return target


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Median single-stream decode tok/s of each mode and of llama-cpp-python."""
    import bastion
    import torch
    from bastion.model import default_model_path
    from bastion.model.cpu_decoder import CpuDecoder
    from bastion.model.quant_weights import block_path_max_tokens

    threads = args.threads or num_cores()
    torch.set_num_threads(threads)
    model_path = args.model or str(default_model_path())
    if args.requantize:
        model_path = requantize(model_path, args.requantize, args.workdir)
    llm = bastion.LLM(model=model_path, num_threads=threads, enable_prefix_caching=False,
                      quantize_weights=args.quantize_weights)
    runner = llm.engine.runner
    max_tokens = block_path_max_tokens(threads)
    decoders = {f"decoder_{name}": CpuDecoder.create(runner.model, runner.kv_caches, max_tokens=max_tokens,
                                                     threads=threads, activation_bits=bits)
                for name, bits in (("int16", 16), ("exact", 32))}
    prompt = build_prompts(llm.tokenizer, 1, args.prompt_tokens)[0]
    warm_up(llm, [prompt])
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            _set_mode(llm, decoders, mode, max_tokens)
            figures[mode].append(run_bastion_single(llm, prompt, args.max_tokens))
    _set_mode(llm, decoders, "decoder_int16", max_tokens)
    result: dict[str, Any] = {
        "workload": f"1 req x {args.prompt_tokens} prompt x {args.max_tokens} output, greedy, ignore_eos",
        "model": model_path.rsplit("/", 1)[-1], "quantize_weights": args.quantize_weights,
        "cores": num_cores(), "threads": threads,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    result.update({f"{mode}_tok_s": round(statistics.median(figures[mode]), 2) for mode in MODES})
    if llamacpp_available():
        peer = LlamaCppPeer(model_path, n_ctx=args.prompt_tokens + args.max_tokens + 64, n_threads=threads)
        peer.generate(prompt[:16], 2)  # warm-up
        tpots = [peer.generate(prompt, args.max_tokens)[1] for _ in range(args.rounds)]
        result["llamacpp_tok_s"] = round(1.0 / pct([t for t in tpots if t], 50), 2)
        for mode in MODES:
            result[f"ratio_{mode}_vs_llamacpp"] = round(result[f"{mode}_tok_s"] / result["llamacpp_tok_s"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2 Q4_1)")
    parser.add_argument("--requantize", default=None, help="llama.cpp type to requantize the model to, e.g. Q4_K_M")
    parser.add_argument("--quantize-weights", default="none", help="EngineConfig.quantize_weights, e.g. Q8_0")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch/llama.cpp threads (default: all cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
