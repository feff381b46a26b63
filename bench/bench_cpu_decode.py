"""Single-stream CPU decode: bastion's decode paths side by side with llama-cpp-python, same run.

Four engines over the same memory-mapped file, one per setting, taking turns round by round (so a
noisy neighbour hits every mode alike):
  decoder_int16  the default: one C++ call per step over the GGUF blocks, activations rounded to int16
  decoder_exact  ``activation_bits=32``: the same call with fp32 activations (exact up to order)
  modules        ``enforce_eager=True``: module-by-module bastion.ops calls over the GGUF blocks
  dequantized    ``dequantize_weights=True``: module by module over fp32 weights (torch GEMV)
Reports median tok/s (1 / median time per output token) and ratios to llama.cpp.

    python -m bench.bench_cpu_decode [--model GGUF | --requantize Q4_K_M] [--quantize-weights Q8_0]
                                     [--max-tokens 128] [--rounds 3] [--threads N] [--json]

``--requantize Q4_K_M`` first has llama.cpp's own quantizer turn the embedded SmolLM2 into that type
(a temporary file), so the K-quant path can be measured without downloading anything; ``--requantize
F16 --quantize-weights Q8_0`` measures blocks made at load time for an unquantized file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

from bench.common import (
    LlamaCppPeer,
    bench_parser,
    build_prompts,
    emit,
    llamacpp_available,
    num_cores,
    pct,
    run_bastion_single,
    use_threads,
    warm_up,
)

# mode -> the EngineConfig settings that select it
MODES: dict[str, dict[str, Any]] = {
    "decoder_int16": {}, "decoder_exact": {"activation_bits": 32}, "modules": {"enforce_eager": True},
    "dequantized": {"dequantize_weights": True},
}


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
    from bastion.model import default_model_path

    threads = use_threads(args.threads)
    model_path = args.model or str(default_model_path())
    if args.requantize:
        model_path = requantize(model_path, args.requantize, args.workdir)
    context = args.prompt_tokens + args.max_tokens + 16
    engines = {mode: bastion.LLM(model=model_path, num_threads=threads, enable_prefix_caching=False,
                                 quantize_weights=args.quantize_weights, max_model_len=context,
                                 num_kv_blocks=context // 16 + 2, **settings) for mode, settings in MODES.items()}
    prompt = build_prompts(engines["decoder_int16"].tokenizer, 1, args.prompt_tokens)[0]
    for llm in engines.values():
        warm_up(llm, [prompt])
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode, llm in engines.items():
            figures[mode].append(run_bastion_single(llm, prompt, args.max_tokens))
    result: dict[str, Any] = {
        "workload": f"1 req x {args.prompt_tokens} prompt x {args.max_tokens} output, greedy, ignore_eos",
        "model": model_path.rsplit("/", 1)[-1], "quantize_weights": args.quantize_weights, "threads": threads,
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
    parser = bench_parser(__doc__, threads=True)
    parser.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2 Q4_1)")
    parser.add_argument("--requantize", default=None, help="llama.cpp type to requantize the model to, e.g. Q4_K_M")
    parser.add_argument("--quantize-weights", default="none", help="EngineConfig.quantize_weights, e.g. Q8_0")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = workdir
        emit(run(args), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
