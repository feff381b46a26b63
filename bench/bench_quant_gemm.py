"""Candidates for the quantized linear, timed side by side on real layer shapes.

For each linear of a real model (SmolLM2-135M Q4_1 with its Q8_0 head, Llama-3.2-1B and SmolLM2-1.7B
Q4_K_M: Q4_K projections and Q6_K ffn_down, the 1B's Q8_0 file), each batch size M and each thread
count, on the same random GGUF blocks of the layer's type:

- ``int16 avx2``: the block kernel with int16 activations on plain AVX2 (``madd_epi16``, the kernel
  before the int8 paths; ``isa="avx2"``);
- ``int16``: the same activations as two int8 planes on the CPU's best instruction set (AVX-512 VNNI
  ``vpdpbusd`` here: the default of ``activation_bits=16``);
- ``int8``: llama.cpp's Q8_0 activations, int8 per 32 values (``activation_bits=8``), on the best
  instruction set, and ``int8 avx2`` (``maddubs``), and ``int8 avxvnni`` / ``int16 avxvnni`` (256-bit
  VEX ``vpdpbusd``) where the CPU has it;
- ``fp32 kernel``: exact fp32 activations on the blocks (``activation_bits=32``);
- ``panels fp32`` / ``panels bf16``: ``QuantizedLinear``'s big-step path (rows dequantized into ~4 MiB
  panels, torch's GEMM on each);
- with ``--torch-packed``: torch's packed CPU matmuls on the weight requantized to their formats
  (``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``; Q4_K shapes only).

Every candidate but the panels is one ``_core.cpu.quant_matmul`` call (what the decoder program runs);
the panels go through ``QuantizedLinear.forward``. Each figure is the best of repeated calls for
``--seconds`` on the same weight (cache-warm where it fits: the M = 1 figures of the small shapes are
not DRAM-bound). Prints GFLOP/s per linear and per model layer (its linears' flops over their summed
times); ``--json`` for the record.

    python -m bench.bench_quant_gemm --models 135m,1b,1.7b --batch 1 4 8 16 32 64 128 --threads 1 2 --json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bastion import _core
from bastion.model.quant_linear import KERNEL_TYPES, QuantizedLinear, QuantPart, bf16_gemm_is_fast

from bench.common import bench_parser, emit

# model -> linear -> (N, K, ggml type name): one layer's projections (QKV and gate/up fused as the
# loader fuses them) and the output head, as their GGUF files store them
MODELS: dict[str, dict[str, tuple[int, int, str]]] = {
    "135m": {"qkv": (960, 576, "Q4_1"), "o": (576, 576, "Q4_1"), "gate_up": (3072, 576, "Q4_1"),
             "down": (576, 1536, "Q4_1"), "lm_head": (49152, 576, "Q8_0")},
    "1b": {"qkv": (3072, 2048, "Q4_K"), "o": (2048, 2048, "Q4_K"), "gate_up": (16384, 2048, "Q4_K"),
           "down": (2048, 8192, "Q6_K")},
    "1b-q8": {"qkv": (3072, 2048, "Q8_0"), "o": (2048, 2048, "Q8_0"), "gate_up": (16384, 2048, "Q8_0"),
              "down": (2048, 8192, "Q8_0")},
    "1.7b": {"qkv": (6144, 2048, "Q4_K"), "o": (2048, 2048, "Q4_K"), "gate_up": (16384, 2048, "Q4_K"),
             "down": (2048, 8192, "Q6_K")},
}
LAYER = ("qkv", "o", "gate_up", "down")  # the linears of one decoder layer
# bytes per block and the offsets of fp16 scales in it (random bytes elsewhere are valid quants)
BLOCKS: dict[str, tuple[int, int, tuple[int, ...]]] = {  # name -> (values, bytes, fp16 scale offsets)
    "Q4_0": (32, 18, (0,)), "Q4_1": (32, 20, (0, 2)), "Q5_0": (32, 22, (0,)), "Q5_1": (32, 24, (0, 2)),
    "Q8_0": (32, 34, (0,)), "Q2_K": (256, 84, (80, 82)), "Q3_K": (256, 110, (108,)), "Q4_K": (256, 144, (0, 2)),
    "Q5_K": (256, 176, (0, 2)), "Q6_K": (256, 210, (208,)),
}


def random_blocks(qtype: str, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Random ``[n, k]`` weight blocks of ``qtype`` with sane fp16 scales, ``[n, bytes per row]`` uint8."""
    values, nbytes, scales = BLOCKS[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n * k // values, nbytes), dtype=np.uint8)
    for offset in scales:
        raw[:, offset:offset + 2] = rng.uniform(1e-4, 1e-3, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    return torch.from_numpy(raw.reshape(n, -1))


def best_ms(fn: Callable[[], object], seconds: float) -> float:
    """Best wall time of ``fn`` in ms over repeated calls for about ``seconds`` (after a warm-up call)."""
    fn()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best * 1e3


def isas() -> list[str]:
    """The integer paths' instruction sets this CPU runs, best first."""
    order = ["avx512vnni", "avxvnni", "avx2"]
    best = _core.cpu.detected_quant_isa()
    supported = []
    for isa in order[order.index(best):]:
        try:
            _core.cpu.quant_matmul(0, 0, 0, 0, 1, 32, 8, 1, 8, 0, isa)  # M = 0: checks the isa only
        except ValueError:
            continue
        supported.append(isa)
    return supported


def candidates(blocks: torch.Tensor, qtype: str, n: int, k: int, threads: int, *, torch_packed: bool,
               all_isas: bool) -> dict[str, Callable[[torch.Tensor], object]]:
    """name -> ``f(x)`` computing ``x @ W^T`` for the same weight ``W`` (see the module doc)."""
    ggml = KERNEL_TYPES[qtype]
    best = _core.cpu.detected_quant_isa()

    def kernel(bits: int, isa: str) -> Callable[[torch.Tensor], object]:
        def run(x: torch.Tensor) -> torch.Tensor:
            y = torch.empty(x.shape[0], n)
            _core.cpu.quant_matmul(x.data_ptr(), blocks.data_ptr(), y.data_ptr(), x.shape[0], n, k, ggml, threads,
                                   bits, 0, isa)
            return y
        return run

    fns: dict[str, Callable[[torch.Tensor], object]] = {"int16 avx2": kernel(16, "avx2")}
    if best != "avx2":
        fns["int16"] = kernel(16, best)
    fns["int8"] = kernel(8, best)
    if best != "avx2":
        fns["int8 avx2"] = kernel(8, "avx2")
    if all_isas and best == "avx512vnni" and "avxvnni" in isas():
        fns["int16 avxvnni"] = kernel(16, "avxvnni")
        fns["int8 avxvnni"] = kernel(8, "avxvnni")
    fns["fp32 kernel"] = kernel(32, best)
    part = (QuantPart(blocks, ggml),)
    fns["panels fp32"] = QuantizedLinear(k, n, part, threads=threads, max_tokens=0)
    if bf16_gemm_is_fast():
        fns["panels bf16"] = QuantizedLinear(k, n, part, threads=threads, max_tokens=0, panel_dtype=torch.bfloat16)
    if torch_packed and qtype == "Q4_K":
        fns.update(_torch_packed(blocks, n, k, threads))
    return fns


def _torch_packed(blocks: torch.Tensor, n: int, k: int, threads: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """torch's packed int8 / int4 matmuls on the Q4_K weight requantized to their formats."""
    dense = torch.empty(n, k)
    _core.cpu.dequantize_rows(blocks.data_ptr(), KERNEL_TYPES["Q4_K"], k, 0, 0, n, dense.data_ptr(), False, threads)
    w8 = torch.clamp(torch.round(dense / (dense.abs().amax(1, keepdim=True) / 127)), -127, 127).to(torch.int8)
    s8 = (dense.abs().amax(1) / 127).to(torch.bfloat16)
    groups = dense.view(n, k // 32, 32)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    q4 = torch.clamp(torch.round((groups - lo) / scale), 0, 15).to(torch.int32).view(n, k)
    packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
    zeros = lo + 8 * scale  # the op computes (q - 8) * scale + zero
    sz = torch.cat([scale, zeros], dim=-1).view(n, k // 32, 2).transpose(0, 1).contiguous().to(torch.bfloat16)
    return {
        "torch _weight_int8pack_mm": lambda x: torch._weight_int8pack_mm(x.to(torch.bfloat16), w8, s8),
        "torch _weight_int4pack_mm_for_cpu": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), packed4, 32, sz),
    }


def layer_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model, M, threads and candidate: GFLOP/s of one decoder layer (its linears' flops over the sum
    of their best times)."""
    out: dict[tuple[str, int, int, str], list[float]] = {}
    for r in rows:
        if r["linear"] in LAYER:
            flops_ms = out.setdefault((r["model"], r["M"], r["threads"], r["candidate"]), [0.0, 0.0, 0.0])
            flops_ms[0] += 2 * r["M"] * r["N"] * r["K"]
            flops_ms[1] += r["ms"]
            flops_ms[2] += 1
    return [{"model": m, "M": b, "threads": t, "candidate": c, "ms": round(ms, 3), "gflops": round(f / ms / 1e6, 1)}
            for (m, b, t, c), (f, ms, count) in out.items() if count == len(LAYER)]


def print_layers(layers: list[dict[str, Any]]) -> None:
    """One line per model, threads and M: every candidate's layer GFLOP/s, the best marked."""
    keys = sorted({(r["model"], r["threads"], r["M"]) for r in layers}, key=lambda t: (t[0], t[1], t[2]))
    for model, threads, m in keys:
        figures = {r["candidate"]: r["gflops"] for r in layers if (r["model"], r["threads"], r["M"]) == (model, threads, m)}
        top = max(figures, key=lambda c: figures[c])
        cells = "  ".join(f"{c}{'*' if c == top else ''} {g:.1f}" for c, g in figures.items())
        print(f"layer {model:6s} t={threads} M={m:4d}  {cells}")


def main() -> None:
    """Time every candidate for every linear of the chosen models, M and thread count."""
    parser = bench_parser(__doc__)
    parser.add_argument("--models", default="135m,1b,1.7b", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--linears", default=None, help="comma-separated subset (qkv,o,gate_up,down,lm_head)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=0.3, help="repeated calls per figure (best is kept)")
    parser.add_argument("--torch-packed", action="store_true", help="also torch's packed int8/int4 matmuls (Q4_K)")
    parser.add_argument("--all-isas", action="store_true", help="also the 256-bit AVX-VNNI paths on AVX-512 CPUs")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    wanted = None if args.linears is None else set(args.linears.split(","))
    for model in args.models.split(","):
        for linear, (n, k, qtype) in MODELS[model].items():
            if wanted is not None and linear not in wanted:
                continue
            blocks = random_blocks(qtype, n, k)
            for threads in args.threads:
                torch.set_num_threads(threads)
                fns = candidates(blocks, qtype, n, k, threads, torch_packed=args.torch_packed, all_isas=args.all_isas)
                for m in args.batch:
                    x = torch.randn(m, k)
                    for name, fn in fns.items():
                        ms = best_ms(lambda fn=fn, x=x: fn(x), args.seconds)
                        rows.append({"model": model, "linear": linear, "type": qtype, "N": n, "K": k, "M": m,
                                     "threads": threads, "candidate": name, "ms": round(ms, 4),
                                     "gflops": round(2 * m * n * k / ms / 1e6, 1)})
                        if not args.json:
                            print(f"{model:6s} {linear:8s} {qtype} M={m:4d} t={threads} {name:18s} {ms:9.3f} ms "
                                  f"{rows[-1]['gflops']:7.1f} GFLOP/s", flush=True)
    layers = layer_figures(rows)
    emit({"rows": rows, "layers": layers}, args.json, human=lambda _: print_layers(layers))


if __name__ == "__main__":
    main()
