"""The op layer: one function per op, dispatched to a backend ("torch", "cpu", "triton", "cuda").

``backend="auto"`` picks the fastest backend available for the tensors' device and dtype (see
``bastion.ops.dispatch``). Arguments are validated here once, whatever the backend. Signatures follow
the "Ops contract" of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bastion.ops.dispatch import BACKENDS, OPS, available_backends, register, resolve
from bastion.ops.sampling import Param
from bastion.ops.validation import (
    check_apply_token_bitmask,
    check_paged_attention,
    check_reshape_and_cache,
    check_rms_norm,
    check_rotary_embedding,
    check_sample,
    check_silu_and_mul,
)

__all__ = [
    "BACKENDS", "OPS", "apply_token_bitmask", "available_backends", "paged_attention", "register",
    "reshape_and_cache", "rms_norm",
    "rotary_embedding", "sample", "silu_and_mul",
]


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
    backend: str = "auto",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of a varlen batch ``q [T, H, D]`` over paged K/V caches; returns ``[T, H, D]``.

    Sequence i owns queries ``cu_seqlens_q[i]:cu_seqlens_q[i+1]``, which are its last tokens, and
    ``seq_lens[i]`` cached tokens reached through ``block_table[i]``. ``scale`` defaults to
    ``head_dim ** -0.5``; ``sliding_window`` limits each query to its last ``w`` positions.
    """
    check_paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, sliding_window)
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype):
        raise ValueError(f"out must match q's shape {tuple(q.shape)} and dtype {q.dtype}")
    fn = resolve("paged_attention", backend, q)
    return fn(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale=scale, sliding_window=sliding_window, out=out)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    backend: str = "auto",
) -> None:
    """Write ``key/value [T, Hkv, D]`` into the caches at flat slots ``slot_mapping [T]`` (-1 = skip)."""
    check_reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)
    # resolved by the rows written, not the cache: fp32 rows into the CPU's default fp16 cache are the
    # C++ kernel's (resolving by the cache's dtype sent them to the torch reference)
    resolve("reshape_and_cache", backend, key)(key, value, k_cache, v_cache, slot_mapping)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dim; with ``residual`` normalises ``x + residual`` and returns ``(out, x + residual)``."""
    check_rms_norm(x, weight, residual)
    return resolve("rms_norm", backend, x)(x, weight, eps, residual)


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of ``q [T, Hq, D]`` and ``k [T, Hk, D]`` at ``positions [T]``; use the returned tensors.

    ``is_neox`` rotates pairs ``(i, i + rot_dim/2)`` (HF Llama); otherwise interleaved pairs (GPT-J).
    Backends may rotate in place, so callers must not rely on the inputs keeping their values.
    """
    check_rotary_embedding(positions, q, k, cos_sin_cache)
    return resolve("rotary_embedding", backend, q)(positions, q, k, cos_sin_cache, is_neox)


def silu_and_mul(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``silu(x[..., :d]) * x[..., d:]`` for ``x [..., 2d]``; returns ``[..., d]``."""
    check_silu_and_mul(x)
    return resolve("silu_and_mul", backend, x)(x)


def sample(
    logits: torch.Tensor,
    temperature: Param,
    top_k: Param,
    top_p: Param,
    min_p: Param,
    generators: Sequence[torch.Generator | None] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One token per row of ``logits [N, V]`` (int64 ``[N]``); see ``bastion.ops.sampling`` for the method.

    Parameters are scalars or per-row tensors; temperature 0 rows are greedy; ``generators[i]`` seeds row i.
    """
    check_sample(logits, temperature, top_k, top_p, min_p, generators)
    return resolve("sample", backend, logits)(logits, temperature, top_k, top_p, min_p, generators)


def apply_token_bitmask(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    indices: torch.Tensor | None = None,
    backend: str = "auto",
) -> None:
    """Forbid tokens in place: ``logits [N, V]`` gets -inf wherever a grammar's bitmask has a 0 bit.

    ``bitmask [R, ceil(V / 32)]`` int32 (llguidance's and xgrammar's layout: bit ``v % 32`` of word
    ``v // 32`` is 1 when token v is allowed) masks logits row ``indices[r]`` (distinct, in range), or row
    r when ``indices`` is None (then R == N). Columns past ``32 * bitmask.shape[1]`` are forbidden too.
    """
    check_apply_token_bitmask(logits, bitmask, indices)
    resolve("apply_token_bitmask", backend, logits)(logits, bitmask, indices)
