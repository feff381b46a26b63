"""Plain torch reference implementations of every op (backend "torch").

Written for obviousness, not speed: each op is the textbook formula on gathered tensors. They compute
in float32, or in float64 when given float64 inputs, which makes this module the float64 oracle the
tests compare the other backends against. Inputs are never modified except the caches written by
``reshape_and_cache``. Argument validation happens once, in ``bastion.ops``; these assume valid input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bastion.ops.sampling import sample

__all__ = ["apply_token_bitmask", "paged_attention", "reshape_and_cache", "rms_norm", "rotary_embedding", "sample",
           "silu_and_mul"]


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (oracle mode); everything else is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def gather_kv(cache: torch.Tensor, block_row: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first ``seq_len`` tokens of one sequence's paged cache, as ``[seq_len, kv_heads, head_dim]``."""
    block_size = cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    pages = cache[block_row[:num_blocks].long()]  # [num_blocks, block_size, Hkv, D]
    return pages.reshape(-1, cache.shape[2], cache.shape[3])[:seq_len]


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
    """Causal varlen attention of ``q [T, H, D]`` over paged K/V; the queries of a sequence are its last tokens.

    Query ``j`` of a sequence with ``n`` queries and ``L`` cached tokens sits at position ``L - n + j``
    and sees keys at positions ``p`` with ``p <= pos`` and (with a window ``w``) ``pos - p < w``.
    """
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    dtype = _compute_dtype(q)
    result = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    cu = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    for i, seq_len in enumerate(lens):
        start, end = cu[i], cu[i + 1]
        if end == start:
            continue
        keys = gather_kv(k_cache, block_table[i], seq_len).to(dtype)
        values = gather_kv(v_cache, block_table[i], seq_len).to(dtype)
        queries = q[start:end].to(dtype).view(end - start, num_kv_heads, group, head_dim)
        scores = torch.einsum("qhgd,khd->hgqk", queries, keys) * scale
        q_pos = torch.arange(seq_len - (end - start), seq_len, device=q.device)[:, None]
        k_pos = torch.arange(seq_len, device=q.device)[None, :]
        visible = k_pos <= q_pos
        if sliding_window is not None:
            visible &= (q_pos - k_pos) < sliding_window
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        attended = torch.einsum("hgqk,khd->qhgd", probs, values)
        result[start:end] = attended.reshape(end - start, num_heads, head_dim).to(result.dtype)
    return result


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write token ``t``'s ``key[t]``/``value[t]`` into flat cache slot ``slot_mapping[t]``; skip slot -1."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    for src, cache in ((key, k_cache), (value, v_cache)):
        flat = cache.view(-1, cache.shape[2], cache.shape[3])
        flat.index_copy_(0, slots, src[keep].to(cache.dtype))


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dim.

    With ``residual``: ``h = x + residual`` is normalised instead and ``(out, h)`` is returned, ``h``
    being the residual stream for the next layer (the fused add+norm of a pre-norm transformer).
    """
    dtype = _compute_dtype(x)
    hidden = x.to(dtype)
    if residual is not None:
        hidden = hidden + residual.to(dtype)
    inv_rms = torch.rsqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps)
    out = (hidden * inv_rms * weight.to(dtype)).to(x.dtype)
    if residual is None:
        return out
    return out, hidden.to(residual.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dims of ``x [T, H, D]`` (cos/sin are ``[T, 1, rot_dim/2]``)."""
    rot_dim = 2 * cos.shape[-1]
    dtype = cos.dtype
    rot, rest = x[..., :rot_dim].to(dtype), x[..., rot_dim:]
    if is_neox:  # pairs (i, i + rot_dim/2): HF Llama's rotate_half
        first, second = rot.chunk(2, dim=-1)
        rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    else:  # GPT-J: interleaved pairs (2i, 2i+1)
        first, second = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack((first * cos - second * sin, second * cos + first * sin), dim=-1).flatten(-2)
    return torch.cat((rotated.to(x.dtype), rest), dim=-1)


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply rotary position embedding to ``q [T, Hq, D]`` and ``k [T, Hk, D]``; returns new tensors.

    ``cos_sin_cache[pos]`` is ``[cos(pos * f_i) for i < rot_dim/2] + [sin(...)]``; dims past
    ``rot_dim`` pass through unchanged (partial rotary).
    """
    dtype = _compute_dtype(q)
    cos, sin = cos_sin_cache[positions.long()].to(dtype).unsqueeze(1).chunk(2, dim=-1)
    return _rotate(q, cos, sin, is_neox), _rotate(k, cos, sin, is_neox)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :d]) * x[..., d:]`` for ``x [..., 2d]`` (the gated MLP activation)."""
    d = x.shape[-1] // 2
    dtype = _compute_dtype(x)
    gate, up = x[..., :d].to(dtype), x[..., d:].to(dtype)
    return (F.silu(gate) * up).to(x.dtype)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, indices: torch.Tensor | None = None) -> None:
    """-inf where the token's bit is 0: the bits unpacked with shifts, then one masked fill per row set."""
    vocab, words = logits.shape[1], bitmask.shape[1]
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = ((bitmask[:, :, None] >> shifts) & 1).bool().reshape(bitmask.shape[0], words * 32)
    if words * 32 >= vocab:
        allowed = allowed[:, :vocab]
    else:  # columns the bitmask does not cover are forbidden
        allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], vocab - words * 32)], dim=1)
    if indices is None:
        logits.masked_fill_(~allowed, float("-inf"))
        return
    index = indices.long()
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
