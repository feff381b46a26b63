"""Candidates for the quantized linear, timed side by side on real layer shapes.

For each (N, K) of a real model, each batch size M and each thread count: bastion's block kernel
(``_core.cpu.quant_matmul`` on GGUF Q4_K blocks, int16 and fp32 activations), bastion's panel path
(``QuantizedLinear``: rows dequantized into a small fp32 or bf16 panel, then torch's GEMM), torch's packed
CPU matmuls on the same weights requantized to their formats (``torch._weight_int8pack_mm``: int8
per output channel, bf16 activations; ``torch._weight_int4pack_mm_for_cpu``: int4 in groups of 32,
bf16 activations) and torch's fp32 GEMM on the dequantized weight (what bastion used to keep in
memory). Prints milliseconds per call and GFLOP/s; ``--json`` for the record.

    python -m bench.bench_quant_gemm --json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bastion import _core
from bastion.model.quant_linear import QuantizedLinear, QuantPart

from bench.common import bench_parser, emit

Q4_K = 12
SHAPES = {  # (N, K) of the linears of SmolLM2-1.7B / Llama-3.2-1B (hidden 2048, intermediate 8192)
    "qkv 1.7B": (6144, 2048), "gate_up 1.7B": (16384, 2048), "down 1.7B": (2048, 8192),
}


def random_q4k(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Random Q4_K blocks with sane fp16 scales, ``[n, k / 256 * 144]`` uint8."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n * k // 256, 144), dtype=np.uint8)
    raw[:, 0:2] = rng.uniform(1e-4, 1e-3, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    raw[:, 2:4] = rng.uniform(1e-4, 1e-3, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    return torch.from_numpy(raw.reshape(n, -1))


def best_ms(fn: Callable[[], object], seconds: float = 0.6) -> float:
    """Best wall time of ``fn`` in ms over repeated calls for about ``seconds`` (after a warm-up call)."""
    fn()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best * 1e3


def candidates(blocks: torch.Tensor, n: int, k: int, threads: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """name -> ``f(x)`` computing ``x @ W^T`` for the same weight ``W``."""
    dense = torch.empty(n, k)
    _core.cpu.dequantize_rows(blocks.data_ptr(), Q4_K, k, 0, 0, n, dense.data_ptr(), False, threads)
    w8 = torch.clamp(torch.round(dense / (dense.abs().amax(1, keepdim=True) / 127)), -127, 127).to(torch.int8)
    s8 = (dense.abs().amax(1) / 127).to(torch.bfloat16)
    groups = dense.view(n, k // 32, 32)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    q4 = torch.clamp(torch.round((groups - lo) / scale), 0, 15).to(torch.int32).view(n, k)
    packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
    zeros = lo + 8 * scale  # the op computes (q - 8) * scale + zero
    sz = torch.cat([scale, zeros], dim=-1).view(n, k // 32, 2).transpose(0, 1).contiguous().to(torch.bfloat16)
    linear = {bits: QuantizedLinear(k, n, (QuantPart(blocks, Q4_K),), activation_bits=bits, threads=threads)
              for bits in (16, 32)}
    bf16_panels = QuantizedLinear(k, n, (QuantPart(blocks, Q4_K),), threads=threads, max_tokens=0,
                                  panel_dtype=torch.bfloat16)

    def block_kernel(bits: int) -> Callable[[torch.Tensor], object]:
        def run(x: torch.Tensor) -> torch.Tensor:
            y = torch.empty(x.shape[0], n)
            _core.cpu.quant_matmul(x.data_ptr(), blocks.data_ptr(), y.data_ptr(), x.shape[0], n, k, Q4_K, threads,
                                   bits, 0)
            return y
        return run

    return {
        "block kernel int16": block_kernel(16),
        "block kernel fp32": block_kernel(32),
        "QuantizedLinear int16": linear[16],
        "QuantizedLinear fp32 (exact)": linear[32],
        "QuantizedLinear bf16 panels": bf16_panels,
        "torch fp32 GEMM, dequantized W": lambda x: x @ dense.T,
        "torch _weight_int8pack_mm": lambda x: torch._weight_int8pack_mm(x.to(torch.bfloat16), w8, s8),
        "torch _weight_int4pack_mm_for_cpu": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), packed4, 32, sz),
    }


def main() -> None:
    """Time every candidate for every shape, M and thread count."""
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 32, 64, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for shape, (n, k) in SHAPES.items():
        blocks = random_q4k(n, k)
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = candidates(blocks, n, k, threads)
            for m in args.batch:
                x = torch.randn(m, k)
                for name, fn in fns.items():
                    ms = best_ms(lambda fn=fn, x=x: fn(x))
                    rows.append({"shape": shape, "N": n, "K": k, "M": m, "threads": threads, "candidate": name,
                                 "ms": round(ms, 3), "gflops": round(2 * m * n * k / ms / 1e6, 1)})
                    if not args.json:
                        print(f"{shape:13s} M={m:4d} t={threads} {name:34s} {ms:9.3f} ms {rows[-1]['gflops']:7.1f} GFLOP/s")
    emit({"rows": rows}, args.json, human=lambda _: None)


if __name__ == "__main__":
    main()
