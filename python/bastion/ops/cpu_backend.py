"""Backend "cpu": the C++/OpenMP kernels of csrc/cpu (fp32), called through raw data pointers.

The wrappers check device, dtype and innermost-dim contiguity (the kernels take pointers and
element strides), convert small index tensors to the dtype the kernels read, and pass the thread
count: ``set_num_threads(n)`` fixes it, otherwise ``torch.get_num_threads()`` is used per call, so
the engine controls both libraries with one setting. Kernels release the GIL.

``supports`` tells ``backend="auto"`` which ops to route here: the ones measured faster than the
torch backend (see ``bench/bench_cpu_attention.py`` and ``tests/ops`` for the numbers).
"""

from __future__ import annotations

import torch

from bastion import _core

try:
    _kernels = _core.cpu
except AttributeError as exc:  # a native core built before the cpu kernels existed
    raise ImportError("bastion._core was built without the cpu kernels; rerun scripts/dev-install.sh") from exc

# Ops this backend implements and that beat backend "torch" on fp32 CPU tensors.
_FASTER_THAN_TORCH = frozenset({"apply_token_bitmask", "paged_attention", "reshape_and_cache", "rms_norm",
                                "silu_and_mul"})

_num_threads: int | None = None


def set_num_threads(n: int | None) -> None:
    """Use ``n`` OpenMP threads in every kernel; None follows ``torch.get_num_threads()``."""
    global _num_threads
    if n is not None and n < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {n}")
    _num_threads = n


def num_threads() -> int:
    """The thread count the next kernel call will use."""
    return _num_threads if _num_threads is not None else torch.get_num_threads()


def supports(op: str, dtype: torch.dtype) -> bool:
    """Whether ``backend="auto"`` should pick this backend for ``op`` on CPU tensors of ``dtype``."""
    return dtype == torch.float32 and op in _FASTER_THAN_TORCH


def _require_fp32(name: str, t: torch.Tensor) -> None:
    if t.device.type != "cpu" or t.dtype != torch.float32:
        raise ValueError(f"cpu backend: {name} must be a float32 CPU tensor, got {t.dtype} on {t.device}")
    if t.stride(-1) != 1:
        raise ValueError(f"cpu backend: {name}'s last dim must be contiguous (strides {t.stride()})")


def _require_cache(name: str, t: torch.Tensor) -> bool:
    """Check a KV cache the C++ kernels read (fp32 or fp16, CPU, last dim contiguous); True when fp16."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"cpu backend: {name} must be a float32 or float16 CPU tensor, got {t.dtype} on {t.device}")
    if t.stride(-1) != 1:
        raise ValueError(f"cpu backend: {name}'s last dim must be contiguous (strides {t.stride()})")
    return t.dtype == torch.float16


def _index(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` on the CPU as a contiguous tensor of ``dtype`` (a no-op when it already is one)."""
    return t.to(device="cpu", dtype=dtype).contiguous()


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """C++ paged attention (fp32 q, fp32 or fp16 caches); same contract as ``bastion.ops.paged_attention``."""
    _require_fp32("q", q)
    kv_fp16 = _require_cache("k_cache", k_cache)
    _require_cache("v_cache", v_cache)
    result = torch.empty_like(q) if out is None else out
    _require_fp32("out", result)
    table = _index(block_table, torch.int32)
    lens = _index(seq_lens, torch.int32)
    cu = _index(cu_seqlens_q, torch.int32)
    head_dim = q.shape[2]
    _kernels.paged_attention(
        q.data_ptr(), q.stride(0), q.stride(1), result.data_ptr(), result.stride(0), result.stride(1),
        k_cache.data_ptr(), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.data_ptr(), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        table.data_ptr(), table.stride(0), lens.data_ptr(), cu.data_ptr(),
        q.shape[0], lens.shape[0], q.shape[1], k_cache.shape[2], head_dim, k_cache.shape[1], table.shape[1],
        k_cache.shape[0], head_dim**-0.5 if scale is None else float(scale), sliding_window or 0, num_threads(),
        kv_fp16,
    )
    return result


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """C++ KV write (fp32 rows into fp32 or fp16 caches); same contract as ``bastion.ops.reshape_and_cache``."""
    for name, t in (("key", key), ("value", value)):
        _require_fp32(name, t)
    kv_fp16 = _require_cache("k_cache", k_cache)
    _require_cache("v_cache", v_cache)
    slots = _index(slot_mapping, torch.int64)
    _kernels.reshape_and_cache(
        key.data_ptr(), key.stride(0), key.stride(1), value.data_ptr(), value.stride(0), value.stride(1),
        k_cache.data_ptr(), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.data_ptr(), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        slots.data_ptr(), key.shape[0], k_cache.shape[2], k_cache.shape[3], k_cache.shape[1], k_cache.shape[0],
        num_threads(), kv_fp16,
    )


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused C++ RMSNorm (+ residual add); inputs are not modified."""
    x = x.contiguous()
    weight = weight.contiguous()
    _require_fp32("x", x)
    _require_fp32("weight", weight)
    out = torch.empty_like(x)
    hidden = x.shape[-1]
    rows = x.numel() // hidden if hidden else 0
    if residual is None:
        _kernels.rms_norm(x.data_ptr(), weight.data_ptr(), 0, 0, out.data_ptr(), rows, hidden, eps, num_threads())
        return out
    residual = residual.contiguous()
    _require_fp32("residual", residual)
    new_residual = torch.empty_like(x)
    _kernels.rms_norm(
        x.data_ptr(), weight.data_ptr(), residual.data_ptr(), new_residual.data_ptr(), out.data_ptr(),
        rows, hidden, eps, num_threads(),
    )
    return out, new_residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """Fused C++ ``silu(x[..., :d]) * x[..., d:]``."""
    x = x.contiguous()
    _require_fp32("x", x)
    d = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype)
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    _kernels.silu_and_mul(x.data_ptr(), out.data_ptr(), rows, d, num_threads())
    return out


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, indices: torch.Tensor | None = None) -> None:
    """C++ token bitmask (fp32 logits, rows with a contiguous last dim); same contract as the op."""
    _require_fp32("logits", logits)
    if bitmask.device.type != "cpu":
        raise ValueError(f"cpu backend: bitmask must be a CPU tensor, got {bitmask.device}")
    words = bitmask.contiguous()
    rows = _index(indices, torch.int64) if indices is not None else None
    _kernels.apply_token_bitmask(logits.data_ptr(), logits.stride(0), words.data_ptr(), words.shape[1],
                                 rows.data_ptr() if rows is not None else 0, words.shape[0], logits.shape[1],
                                 num_threads())


def quant_matmul(x: torch.Tensor, blocks: torch.Tensor, ggml_type: int, out_features: int,
                 threads: int | None = None, activation_bits: int = 32, out: torch.Tensor | None = None,
                 ) -> torch.Tensor:
    """``x [M, K] @ W^T`` -> ``[M, N]`` with W as GGUF blocks (``blocks`` uint8 ``[N, bytes per row]``).

    ``ggml_type`` is ggml's number (2 = Q4_0, 3 = Q4_1, 6 = Q5_0, 7 = Q5_1, 8 = Q8_0, 12 = Q4_K,
    14 = Q6_K; K a multiple of the type's block: 32, or 256 for the K-quants). Equals the fp32 matmul with the dequantized weight
    up to summation order; for decode-sized M it reads 5-7x fewer bytes than the fp32 weight.
    ``activation_bits=16`` first rounds each 32 values of x to int16 with one scale and sums integer
    products: ~1.3x faster on one core, relative error ~2e-5; 32 keeps x as it is.
    ``threads`` overrides ``num_threads()`` for this call. ``out`` (fp32 ``[M, N]`` with unit column
    stride, e.g. a column slice of a wider output) receives the result instead of a new tensor.
    """
    x = x.contiguous()
    _require_fp32("x", x)
    if blocks.dtype != torch.uint8 or not blocks.is_contiguous() or blocks.shape[0] != out_features:
        raise ValueError(f"cpu backend: blocks must be contiguous uint8 [{out_features}, bytes], got "
                         f"{blocks.dtype} {tuple(blocks.shape)}")
    rows, k = x.numel() // x.shape[-1], x.shape[-1]
    if out is None:
        out = torch.empty((*x.shape[:-1], out_features), dtype=torch.float32)
    elif out.dtype != torch.float32 or out.dim() != 2 or tuple(out.shape) != (rows, out_features) or out.stride(1) != 1:
        raise ValueError(f"cpu backend: out must be float32 [{rows}, {out_features}] with unit column stride, got "
                         f"{out.dtype} {tuple(out.shape)} strides {out.stride()}")
    _kernels.quant_matmul(x.data_ptr(), blocks.data_ptr(), out.data_ptr(), rows, out_features, k, ggml_type,
                          num_threads() if threads is None else threads, activation_bits,
                          out.stride(0) if out.dim() == 2 else 0)
    return out
