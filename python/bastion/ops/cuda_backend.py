"""Backend "cuda": the CUDA C++ kernels of csrc/cuda, called through raw device pointers.

It implements decode attention (exactly one query token per sequence) and the KV-cache write. For a
prefill or mixed batch, or a shape the kernel lacks (head_dim other than 64/128), ``paged_attention``
raises ``Unsupported`` (a ValueError), so under ``backend="auto"`` the dispatcher hands the call to the
next backend (Triton). Kernels run asynchronously on torch's current stream of the tensors' device, and the
split-KV workspace comes from torch's caching allocator: nothing here synchronises the GPU.

Importing this module raises ImportError when ``bastion._core`` was built without CUDA
(``BASTION_CUDA=ON``), or when the current GPU is not one the kernels were compiled for (by default
sm_90a: H100/H200 only; ``BASTION_CUDA_ARCHS`` at build time), which the dispatcher records as the
reason the backend is unavailable: "auto" then runs Triton there instead of failing every launch.
"""

from __future__ import annotations

import functools

import torch

from bastion import _core
from bastion.ops.cuda_archs import runs_on
from bastion.ops.dispatch import Unsupported
from bastion.ops.gpu import sm_count

# paged_attention serves decode batches only, reshape_and_cache rows of whole 16-byte vectors only;
# "auto" passes anything else to the next backend
PARTIAL_OPS = frozenset({"paged_attention", "reshape_and_cache"})

if not getattr(_core, "with_cuda", False):
    raise ImportError("bastion._core was built without CUDA kernels; rebuild with BASTION_CUDA=ON")

_kernels = _core.cuda

if torch.cuda.is_available():
    _capability = torch.cuda.get_device_capability()
    if not runs_on(_capability, _core.cuda_archs):
        raise ImportError(f"bastion's CUDA kernels were compiled for {_core.cuda_archs}; this GPU is "
                          f"sm_{_capability[0]}{_capability[1]} (rebuild with BASTION_CUDA_ARCHS including it)")

_ATTENTION_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_CACHE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_VEC_BYTES = 16  # the kernels move 16-byte vectors: rows and strides must be multiples of it


def supports(op: str, dtype: torch.dtype) -> bool:
    """Whether ``backend="auto"`` should pick this backend for ``op`` on CUDA tensors of ``dtype``."""
    if op == "paged_attention":
        return dtype in _ATTENTION_DTYPES
    return op == "reshape_and_cache" and dtype in _CACHE_DTYPES


@functools.lru_cache(maxsize=256)
def _decode_plan(
    num_seqs: int, num_heads: int, num_kv_heads: int, head_dim: int, block_size: int, max_blocks: int,
    sliding_window: int, num_sms: int,
) -> dict[str, int]:
    return _kernels.decode_plan(
        num_seqs=num_seqs, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
        block_size=block_size, max_blocks_per_seq=max_blocks, sliding_window=sliding_window, num_sms=num_sms,
    )


def _require_on(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"cuda backend: {name} must be on {device}, got {t.device}")


def _require_contiguous(name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"cuda backend: {name} must be contiguous (strides {t.stride()})")


def _vector_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its rows are 16-byte vectors the kernels can load, else an aligned contiguous copy.

    A copy, not ``contiguous()``: a contiguous view at a misaligned offset would come back unchanged.
    """
    size = t.element_size()
    ok = (
        t.stride(-1) == 1
        and t.data_ptr() % _VEC_BYTES == 0
        and all((s * size) % _VEC_BYTES == 0 for s in t.stride()[:-1])
    )
    return t if ok else t.clone(memory_format=torch.contiguous_format)


def _index(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` as a contiguous ``dtype`` tensor (no copy when it already is one)."""
    return t.to(device=device, dtype=dtype).contiguous()


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
    """CUDA decode attention; same contract as ``bastion.ops.paged_attention`` for decode batches.

    A decode batch has one query per sequence (``q.shape[0] == len(seq_lens)``; ``cu_seqlens_q`` is
    then ``arange``, and is not read, to avoid a device sync). Raises ``Unsupported`` (a ValueError,
    on which ``backend="auto"`` moves on to Triton) for what the kernel does not implement: prefill
    batches, dtypes other than fp16/bf16, head dims other than 64/128, more than 65535 sequences,
    non-contiguous caches. Raises ValueError for tensors on the wrong device.
    """
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = seq_lens.shape[0]
    if num_tokens != num_seqs:
        raise Unsupported(
            f"cuda backend: paged_attention implements decode only (one query per sequence); got "
            f"{num_tokens} query tokens for {num_seqs} sequences"
        )
    dtype_name = _ATTENTION_DTYPES.get(q.dtype)
    if dtype_name is None or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise Unsupported(
            f"cuda backend: paged_attention needs q and caches all float16 or all bfloat16, got q {q.dtype}, "
            f"k_cache {k_cache.dtype}, v_cache {v_cache.dtype}"
        )
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise Unsupported(f"cuda backend: k_cache/v_cache must be contiguous (strides {k_cache.stride()}, "
                          f"{v_cache.stride()})")
    device = q.device
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    window = sliding_window or 0
    on_cuda = device.type == "cuda"
    num_sms = sm_count(device) if on_cuda else 1
    try:  # the kernel's own shape check (head_dim 64/128, num_seqs <= 65535, ...), before anything is allocated
        plan = _decode_plan(num_seqs, num_heads, num_kv_heads, head_dim, block_size, block_table.shape[1], window,
                            num_sms)
    except ValueError as exc:
        raise Unsupported(f"cuda backend: {exc}") from None
    if not on_cuda:
        raise ValueError(f"cuda backend: tensors must be on a CUDA device, got {device}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("block_table", block_table), ("seq_lens", seq_lens)):
        _require_on(name, t, device)
    result = torch.empty((num_tokens, num_heads, head_dim), dtype=q.dtype, device=device) if out is None else out
    _require_on("out", result, device)
    _require_contiguous("out", result)
    if num_seqs == 0:
        return result

    q = _vector_rows(q)
    table = _index(block_table, torch.int32, device)
    lens = _index(seq_lens, torch.int32, device)
    workspace_bytes = plan["workspace_bytes"]
    # Freed on return but stream-ordered by the caching allocator, so the kernels still own it.
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=device) if workspace_bytes else None
    with torch.cuda.device(device):
        _kernels.paged_attention_decode(
            out=result.data_ptr(), q=q.data_ptr(), k_cache=k_cache.data_ptr(), v_cache=v_cache.data_ptr(),
            block_table=table.data_ptr(), seq_lens=lens.data_ptr(),
            workspace=0 if workspace is None else workspace.data_ptr(), workspace_bytes=workspace_bytes,
            q_stride_token=q.stride(0), q_stride_head=q.stride(1), num_seqs=num_seqs, num_heads=num_heads,
            num_kv_heads=num_kv_heads, head_dim=head_dim, block_size=block_size, max_blocks_per_seq=table.shape[1],
            sliding_window=window, num_sms=num_sms,
            scale=head_dim**-0.5 if scale is None else float(scale), dtype=dtype_name,
            stream=torch.cuda.current_stream(device).cuda_stream,
        )
    return result


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """CUDA KV write; same contract as ``bastion.ops.reshape_and_cache`` (slots < 0 are skipped).

    Slots past the end of the cache are skipped too (the kernel cannot raise): they never write
    outside the cache. Raises ValueError for dtypes or layouts the kernel does not support, and
    ``Unsupported`` for rows that are not whole 16-byte vectors (tiny head dims: Triton takes them).
    """
    if k_cache.dtype not in _CACHE_DTYPES or not (key.dtype == value.dtype == v_cache.dtype == k_cache.dtype):
        raise ValueError(
            f"cuda backend: reshape_and_cache needs key, value and caches of one dtype among "
            f"{', '.join(map(str, _CACHE_DTYPES))}; got key {key.dtype}, value {value.dtype}, "
            f"k_cache {k_cache.dtype}, v_cache {v_cache.dtype}"
        )
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    if (head_dim * k_cache.element_size()) % _VEC_BYTES:  # a shape question: asked before any device check
        raise Unsupported(f"cuda backend: head_dim {head_dim} of {k_cache.dtype} is not a whole number of "
                          "16-byte vectors")
    device = k_cache.device
    if device.type != "cuda":
        raise ValueError(f"cuda backend: tensors must be on a CUDA device, got {device}")
    for name, t in (("key", key), ("value", value), ("v_cache", v_cache), ("slot_mapping", slot_mapping)):
        _require_on(name, t, device)
    _require_contiguous("k_cache", k_cache)
    _require_contiguous("v_cache", v_cache)
    if key.shape[0] == 0:
        return
    key = _vector_rows(key)
    value = _vector_rows(value)
    slots = _index(slot_mapping, torch.int64, device)
    with torch.cuda.device(device):
        _kernels.reshape_and_cache(
            key=key.data_ptr(), value=value.data_ptr(), k_cache=k_cache.data_ptr(), v_cache=v_cache.data_ptr(),
            slot_mapping=slots.data_ptr(), key_stride_token=key.stride(0), key_stride_head=key.stride(1),
            value_stride_token=value.stride(0), value_stride_head=value.stride(1), num_slots=num_blocks * block_size,
            num_tokens=key.shape[0], num_kv_heads=num_kv_heads, head_dim=head_dim,
            elem_bytes=k_cache.element_size(), stream=torch.cuda.current_stream(device).cuda_stream,
        )
