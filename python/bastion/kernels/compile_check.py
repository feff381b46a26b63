"""Compile every kernel for an NVIDIA target (default sm_90) on a machine without a GPU.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` runs the whole GPU pipeline
(TTIR -> TTGIR -> LLVM -> PTX -> cubin via the bundled ptxas), so it catches what the CPU
interpreter cannot: tl.dot shape limits (K >= 16 for 16-bit operands), bf16 code paths, shared-memory
blow-ups. The kernels must be real JITFunctions, so run this WITHOUT ``TRITON_INTERPRET``:

    python -m bastion.kernels.compile_check            # table of shared memory per kernel
    python -m bastion.kernels.compile_check --json     # one JSON object per kernel (used by tests)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Shared memory per block on H100 (sm_90): 227 KB usable of the 228 KB per SM.
MAX_SHARED_BYTES = 227 * 1024
FLOAT_SCALARS = frozenset({"scale", "eps"})
# Pointer element types that do not follow the data dtype.
INDEX_POINTERS = {
    "block_table_ptr": "*i32", "seq_lens_ptr": "*i32", "cu_seqlens_q_ptr": "*i32", "slot_mapping_ptr": "*i64",
    "positions_ptr": "*i64", "partial_out_ptr": "*fp32", "lse_ptr": "*fp32", "top_k_ptr": "*i32",
    "temperature_ptr": "*fp32", "top_p_ptr": "*fp32", "min_p_ptr": "*fp32", "uniform_ptr": "*fp32",
}


@dataclass(frozen=True)
class KernelSpec:
    """One kernel x constexpr combination to compile; ``dtype`` is the data pointers' Triton type."""

    name: str
    kernel: str  # "module:function" inside bastion.kernels
    dtype: str
    constexprs: dict[str, Any]
    pointers: dict[str, str] = field(default_factory=dict)
    num_warps: int = 4


def _attention_constexprs(group: int, head_size: int, tile: int, window: bool, precision: str) -> dict[str, Any]:
    """Constexprs of either attention kernel, derived the way the host planner derives them."""
    from ._utils import MIN_DOT_K, next_power_of_2
    from .attention_plan import query_block_shape

    block_m, block_q = query_block_shape(group)
    head_pad = max(MIN_DOT_K, next_power_of_2(head_size))
    return {"GROUP": group, "BLOCK_M": block_m, "BLOCK_Q": block_q, "TILE": tile, "HEAD_PAD": head_pad,
            "USE_WINDOW": window, "DOT_PRECISION": precision}


def default_specs() -> list[KernelSpec]:
    """The representative matrix: bf16 everywhere it matters, GQA 1/4/8, head 64/96/128/256, tiles 16/32."""
    unified = "attention_unified:unified_attention_kernel"
    split = "attention_split:split_kv_attention_kernel"
    return [
        KernelSpec("unified bf16 D128 G8 T32", unified, "bf16", _attention_constexprs(8, 128, 32, False, "tf32")),
        KernelSpec("unified bf16 D256 G8 T32", unified, "bf16", _attention_constexprs(8, 256, 32, False, "tf32")),
        KernelSpec("unified bf16 D96 G4 T16 window", unified, "bf16", _attention_constexprs(4, 96, 16, True, "tf32")),
        KernelSpec("unified fp16 D64 G1 T32", unified, "fp16", _attention_constexprs(1, 64, 32, False, "tf32")),
        KernelSpec("unified fp32 D64 G4 T16 ieee", unified, "fp32", _attention_constexprs(4, 64, 16, False, "ieee")),
        KernelSpec("unified fp16 D128 G8 T32 int64 metadata", unified, "fp16",
                   _attention_constexprs(8, 128, 32, False, "tf32"),
                   pointers={"block_table_ptr": "*i64", "seq_lens_ptr": "*i64", "cu_seqlens_q_ptr": "*i64"}),
        KernelSpec("split bf16 D128 G8 T16 S4", split, "bf16",
                   {**_attention_constexprs(8, 128, 16, False, "tf32"), "NUM_SPLITS": 4}),
        KernelSpec("split fp16 D64 G4 T16 S16 window", split, "fp16",
                   {**_attention_constexprs(4, 64, 16, True, "tf32"), "NUM_SPLITS": 16}),
        KernelSpec("merge bf16 D128 S4", "attention_split:merge_splits_kernel", "bf16",
                   {"NUM_SPLITS": 4, "SPLITS_PAD": 4, "HEAD_PAD": 128}),
        KernelSpec("reshape_and_cache bf16 H8 D128", "kv_cache:reshape_and_cache_kernel", "bf16",
                   {"HEADS_PAD": 8, "HEAD_PAD": 128}),
        KernelSpec("reshape_and_cache fp16 H2 D96", "kv_cache:reshape_and_cache_kernel", "fp16",
                   {"HEADS_PAD": 2, "HEAD_PAD": 128}),
        KernelSpec("rms_norm bf16 residual 4096", "rms_norm:rms_norm_kernel", "bf16",
                   {"HAS_RESIDUAL": True, "BLOCK": 4096}, num_warps=8),
        KernelSpec("rms_norm fp16 1024", "rms_norm:rms_norm_kernel", "fp16", {"HAS_RESIDUAL": False, "BLOCK": 1024}),
        KernelSpec("rotary bf16 neox Hq32 Hk8 rot128", "rotary:rotary_embedding_kernel", "bf16",
                   {"IS_NEOX": True, "Q_HEADS_PAD": 32, "K_HEADS_PAD": 8, "HALF_PAD": 64},
                   pointers={"cos_sin_ptr": "*fp32"}),
        KernelSpec("rotary fp16 gptj Hq8 Hk2 rot64", "rotary:rotary_embedding_kernel", "fp16",
                   {"IS_NEOX": False, "Q_HEADS_PAD": 8, "K_HEADS_PAD": 2, "HALF_PAD": 32}),
        KernelSpec("silu_and_mul bf16", "activation:silu_and_mul_kernel", "bf16", {"BLOCK": 1024}),
        KernelSpec("sample fp32 logits", "sampling:sample_kernel", "fp32",
                   {"GREEDY_BELOW": 1e-5, "MIN_WEIGHT": 1.1754943508222875e-38, "NUM_PIVOTS": 32, "BLOCK_V": 1024},
                   pointers={"out_ptr": "*i64"}),
        KernelSpec("sample bf16 logits", "sampling:sample_kernel", "bf16",
                   {"GREEDY_BELOW": 1e-5, "MIN_WEIGHT": 1.1754943508222875e-38, "NUM_PIVOTS": 32, "BLOCK_V": 1024},
                   pointers={"out_ptr": "*i64"}),
        KernelSpec("apply_token_bitmask fp32 indexed", "token_bitmask:apply_token_bitmask_kernel", "fp32",
                   {"HAS_INDICES": True, "BLOCK": 1024}, pointers={"bitmask_ptr": "*i32", "indices_ptr": "*i64"}),
        KernelSpec("apply_token_bitmask bf16", "token_bitmask:apply_token_bitmask_kernel", "bf16",
                   {"HAS_INDICES": False, "BLOCK": 1024}, pointers={"bitmask_ptr": "*i32", "indices_ptr": "*i32"}),
    ]


def _load_kernel(path: str) -> Any:
    import importlib

    module_name, fn_name = path.split(":")
    fn = getattr(importlib.import_module(f"{__package__}.{module_name}"), fn_name)
    if not hasattr(fn, "arg_names") or type(fn).__name__ != "JITFunction":
        raise RuntimeError(f"{path} is a {type(fn).__name__}, not a JITFunction: unset TRITON_INTERPRET")
    return fn


def signature_of(fn: Any, spec: KernelSpec) -> dict[str, str]:
    """Triton signature from argument names: ``*_ptr`` pointers, constexprs, float scalars, else i32."""
    signature = {}
    for name in fn.arg_names:
        if name in spec.constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = spec.pointers.get(name, INDEX_POINTERS.get(name, f"*{spec.dtype}"))
        else:
            signature[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    return signature


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers and local memory (spills) per thread of a cubin, read with Triton's bundled cuobjdump."""
    import triton

    cuobjdump = Path(triton.knobs.nvidia.ptxas.path).with_name("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
    if found is None:
        raise RuntimeError(f"no resource usage in cuobjdump output: {text[-500:]}")
    return {"registers": int(found[1]), "stack": int(found[2]), "local": int(found[3])}


def compile_spec(spec: KernelSpec, arch: int = 90) -> dict[str, Any]:
    """Compile one spec; returns name, shared bytes, registers, spills (local bytes) and seconds (raises on failure)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _load_kernel(spec.kernel)
    signature = signature_of(fn, spec)
    # Launches pass 16-byte-aligned tensors, which Triton specialises as divisible by 16: mirror that.
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names) if signature[name][0] == "*"}
    start = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, signature, spec.constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": spec.num_warps})
    seconds = round(time.perf_counter() - start, 2)
    return {"name": spec.name, "shared": compiled.metadata.shared, "num_warps": compiled.metadata.num_warps,
            "has_cubin": bool(compiled.asm.get("cubin")), "seconds": seconds, **resource_usage(compiled.asm["cubin"])}


def describe_failure(exc: BaseException) -> str:
    """The innermost cause of a compile failure (Triton wraps it once per nested jit call)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Compile the default matrix; print a table (or JSON lines); exit 1 on a failure or smem overflow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for sm_90")
    args = parser.parse_args(argv)
    failed = False
    for spec in default_specs():
        try:
            result = compile_spec(spec, args.arch)
            result["ok"] = result["shared"] <= MAX_SHARED_BYTES
        except Exception as exc:  # report every kernel, not just the first failure
            result = {"name": spec.name, "ok": False, "error": describe_failure(exc)[:2000]}
        failed |= not result["ok"]
        if args.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{spec.name:42s} FAILED {result['error']}", flush=True)
        else:
            print(f"{spec.name:42s} shared {result['shared']:7d} B  regs {result['registers']:3d}  "
                  f"local {result['local']:4d} B  warps {result['num_warps']}  {result['seconds']:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
