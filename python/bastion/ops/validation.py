"""Argument checks shared by every backend of ``bastion.ops``.

They look only at shapes, dtypes and devices (no tensor reads), so they cost microseconds and never
synchronise a GPU. Each failure raises ValueError naming the argument and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INDEX_DTYPES = (torch.int32, torch.int64)


def _fail(message: str) -> None:
    raise ValueError(message)


def _need_dim(name: str, t: torch.Tensor, dim: int, layout: str) -> None:
    if t.dim() != dim:
        _fail(f"{name} must be {layout}, got shape {tuple(t.shape)}")


def _need_dtype(name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        _fail(f"{name} has dtype {t.dtype}; expected one of {', '.join(str(d) for d in allowed)}")


def _same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        _fail(f"all tensors must be on one device, got {devices}")


def check_paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    sliding_window: int | None,
) -> None:
    """Validate the arguments of ``paged_attention``."""
    _need_dim("q", q, 3, "[num_tokens, num_heads, head_dim]")
    _need_dim("k_cache", k_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]")
    if v_cache.shape != k_cache.shape:
        _fail(f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    if q.shape[2] != k_cache.shape[3]:
        _fail(f"q head_dim {q.shape[2]} != k_cache head_dim {k_cache.shape[3]}")
    if q.shape[1] % k_cache.shape[2] != 0:
        _fail(f"num_heads {q.shape[1]} is not a multiple of num_kv_heads {k_cache.shape[2]}")
    _need_dim("block_table", block_table, 2, "[num_seqs, max_blocks_per_seq]")
    _need_dim("seq_lens", seq_lens, 1, "[num_seqs]")
    _need_dim("cu_seqlens_q", cu_seqlens_q, 1, "[num_seqs + 1]")
    if block_table.shape[0] != seq_lens.shape[0]:
        _fail(f"block_table has {block_table.shape[0]} rows but seq_lens has {seq_lens.shape[0]} sequences")
    if cu_seqlens_q.shape[0] != seq_lens.shape[0] + 1:
        _fail(f"cu_seqlens_q has {cu_seqlens_q.shape[0]} entries; expected num_seqs + 1 = {seq_lens.shape[0] + 1}")
    _need_dtype("q", q, _FLOAT_DTYPES)
    if k_cache.dtype != v_cache.dtype:
        _fail(f"k_cache dtype {k_cache.dtype} != v_cache dtype {v_cache.dtype}")
    for name, t in (("block_table", block_table), ("seq_lens", seq_lens), ("cu_seqlens_q", cu_seqlens_q)):
        _need_dtype(name, t, _INDEX_DTYPES)
    if sliding_window is not None and sliding_window <= 0:
        _fail(f"sliding_window must be a positive number of tokens or None, got {sliding_window}")
    _same_device(q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table)


def check_reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Validate the arguments of ``reshape_and_cache``."""
    _need_dim("k_cache", k_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]")
    if v_cache.shape != k_cache.shape:
        _fail(f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    _need_dim("key", key, 3, "[num_tokens, num_kv_heads, head_dim]")
    if key.shape[1:] != k_cache.shape[2:]:
        _fail(f"key is [T, {key.shape[1]}, {key.shape[2]}] but the cache holds [{k_cache.shape[2]}, {k_cache.shape[3]}] per token")
    if value.shape != key.shape:
        _fail(f"value shape {tuple(value.shape)} != key shape {tuple(key.shape)}")
    _need_dim("slot_mapping", slot_mapping, 1, "[num_tokens]")
    if slot_mapping.shape[0] != key.shape[0]:
        _fail(f"slot_mapping has {slot_mapping.shape[0]} entries for {key.shape[0]} tokens")
    _need_dtype("slot_mapping", slot_mapping, _INDEX_DTYPES)
    _same_device(key=key, value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)


def check_rms_norm(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> None:
    """Validate the arguments of ``rms_norm``."""
    if x.dim() < 1 or weight.shape != (x.shape[-1],):
        _fail(f"weight shape {tuple(weight.shape)} must be [hidden] matching x's last dim (x is {tuple(x.shape)})")
    _need_dtype("x", x, _FLOAT_DTYPES)
    if residual is not None and residual.shape != x.shape:
        _fail(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")


def check_rotary_embedding(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> None:
    """Validate the arguments of ``rotary_embedding``."""
    _need_dim("q", q, 3, "[num_tokens, num_heads, head_dim]")
    _need_dim("k", k, 3, "[num_tokens, num_kv_heads, head_dim]")
    _need_dim("positions", positions, 1, "[num_tokens]")
    _need_dim("cos_sin_cache", cos_sin_cache, 2, "[max_position, rot_dim]")
    if not (q.shape[0] == k.shape[0] == positions.shape[0]):
        _fail(f"q, k and positions disagree on num_tokens: {q.shape[0]}, {k.shape[0]}, {positions.shape[0]}")
    if q.shape[2] != k.shape[2]:
        _fail(f"q head_dim {q.shape[2]} != k head_dim {k.shape[2]}")
    rot_dim = cos_sin_cache.shape[1]
    if rot_dim % 2 or rot_dim > q.shape[2]:
        _fail(f"cos_sin_cache rot_dim {rot_dim} must be even and <= head_dim {q.shape[2]}")
    _need_dtype("positions", positions, _INDEX_DTYPES)


def check_silu_and_mul(x: torch.Tensor) -> None:
    """Validate the argument of ``silu_and_mul``."""
    if x.dim() < 1 or x.shape[-1] % 2:
        _fail(f"x's last dim must be even (gate and up halves), got shape {tuple(x.shape)}")


def check_sample(
    logits: torch.Tensor,
    temperature: float | torch.Tensor,
    top_k: float | torch.Tensor,  # sample()'s Param: only the shape is checked here
    top_p: float | torch.Tensor,
    min_p: float | torch.Tensor,
    generators: Sequence[torch.Generator | None] | None,
) -> None:
    """Validate the arguments of ``sample``: 2-D float logits, per-row parameters and generators that fit them.

    Value ranges (top_p in (0, 1], ...) need the parameters' values, so the backends check them when they
    read them (``bastion.ops.sampling.row_parameters``).
    """
    _need_dim("logits", logits, 2, "[num_rows, vocab]")
    _need_dtype("logits", logits, _FLOAT_DTYPES)
    n = logits.shape[0]
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p)):
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != (n,):
            _fail(f"{name} must be a scalar or a tensor of shape [{n}], got {tuple(value.shape)}")
    if generators is not None and len(generators) != n:
        _fail(f"generators has {len(generators)} entries for {n} rows")


def check_apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, indices: torch.Tensor | None) -> None:
    """Validate ``apply_token_bitmask``: 2-D float logits, a 2-D int32 bitmask with one row per masked row
    (``indices``, 1-D int, or every logits row when None), all on one device.

    Index values (in range, distinct) are not read here: reading them would synchronise a GPU.
    """
    _need_dim("logits", logits, 2, "[num_rows, vocab]")
    _need_dtype("logits", logits, _FLOAT_DTYPES)
    _need_dim("bitmask", bitmask, 2, "[num_masked_rows, ceil(vocab / 32)]")
    _need_dtype("bitmask", bitmask, (torch.int32,))
    if indices is None:
        if bitmask.shape[0] != logits.shape[0]:
            _fail(f"bitmask has {bitmask.shape[0]} rows for {logits.shape[0]} logits rows (pass indices to mask some)")
        _same_device(logits=logits, bitmask=bitmask)
        return
    _need_dim("indices", indices, 1, "[num_masked_rows]")
    _need_dtype("indices", indices, _INDEX_DTYPES)
    if indices.shape[0] != bitmask.shape[0]:
        _fail(f"indices has {indices.shape[0]} entries for {bitmask.shape[0]} bitmask rows")
    _same_device(logits=logits, bitmask=bitmask, indices=indices)
