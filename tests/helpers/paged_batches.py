"""Builders of random paged batches and float64 oracles written independently of bastion.ops.

Shared by tests/ops and tests/kernels.

The attention oracle gathers every cached token one by one through the
block table, repeat the KV heads per group, and compute masked softmax(q k^T * scale) v in float64
with plain torch ops (not SDPA), so it shares no numerics with any backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The builder fills every cache slot no sequence uses with this: a kernel reading one is far off the oracle.
CANARY = 1234.5


@dataclass
class PagedBatch:
    """A varlen attention problem over paged K/V caches, in the layout of the ops contract."""

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        """Positional arguments of ``paged_attention`` (``bastion.ops`` and ``bastion.kernels``)."""
        return self.q, self.k_cache, self.v_cache, self.block_table, self.seq_lens, self.cu_seqlens_q


def make_paged_batch(
    q_lens: list[int],
    seq_lens: list[int],
    *,
    group: int,
    head_size: int,
    block_size: int,
    num_kv_heads: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> PagedBatch:
    """Random q and caches for sequences whose last ``q_lens[i]`` of ``seq_lens[i]`` tokens are queries.

    Built on the CPU, then moved to ``device``. Each sequence's pages are a random draw from the pool;
    every slot no sequence uses (page 0, two spare pages, the tail of each last page) holds CANARY, and
    block-table padding points at page 0, so stray reads show.
    """
    gen = torch.Generator().manual_seed(seed)
    pages_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(pages_per_seq) + 3
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_cache = torch.full(shape, CANARY, dtype=dtype)
    v_cache = torch.full(shape, CANARY, dtype=dtype)
    order = torch.randperm(num_blocks - 1, generator=gen) + 1  # page 0 stays a canary page
    block_table = torch.zeros((len(seq_lens), max(pages_per_seq)), dtype=torch.int32)
    taken = 0
    for i, (n, pages) in enumerate(zip(seq_lens, pages_per_seq, strict=True)):
        block_table[i, :pages] = order[taken : taken + pages].to(torch.int32)
        taken += pages
        for cache in (k_cache, v_cache):
            flat = cache[block_table[i, :pages].long()].reshape(-1, num_kv_heads, head_size)
            flat[:n] = torch.randn((n, num_kv_heads, head_size), generator=gen).to(dtype)
            cache[block_table[i, :pages].long()] = flat.view(pages, block_size, num_kv_heads, head_size)
    cu = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(q_lens).cumsum(0)
    q = torch.randn((int(cu[-1]), num_kv_heads * group, head_size), generator=gen).to(dtype)
    tensors = (q, k_cache, v_cache, block_table, torch.tensor(seq_lens, dtype=torch.int32), cu)
    return PagedBatch(*(t.to(device) for t in tensors))


def attention_oracle(batch: PagedBatch, sliding_window: int | None = None, scale: float | None = None) -> torch.Tensor:
    """float64 causal attention of ``batch``, computed token by token from the pages."""
    q = batch.q.double()
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = batch.k_cache.shape[1], batch.k_cache.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    out = torch.zeros_like(q)
    for i, seq_len in enumerate(batch.seq_lens.tolist()):
        start, end = int(batch.cu_seqlens_q[i]), int(batch.cu_seqlens_q[i + 1])
        rows = [int(batch.block_table[i, t // block_size]) for t in range(seq_len)]
        keys = torch.stack([batch.k_cache[r, t % block_size] for t, r in enumerate(rows)]).double()
        values = torch.stack([batch.v_cache[r, t % block_size] for t, r in enumerate(rows)]).double()
        keys = keys.repeat_interleave(num_heads // num_kv_heads, dim=1)  # [L, H, D]
        values = values.repeat_interleave(num_heads // num_kv_heads, dim=1)
        scores = (q[start:end, None] * keys[None]).sum(-1) * scale  # [n_q, L, H]
        for j in range(end - start):  # mask keys after the query, or before its window
            pos = seq_len - (end - start) + j
            first = 0 if sliding_window is None else max(0, pos - sliding_window + 1)
            scores[j, :first] = float("-inf")
            scores[j, pos + 1 :] = float("-inf")
        out[start:end] = (torch.softmax(scores, dim=1)[..., None] * values[None]).sum(1)
    return out


def rope_oracle(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, is_neox: bool) -> torch.Tensor:
    """Rotary embedding as complex multiplication in float64: each pair (a, b) becomes (a + ib) e^{i pos f}."""
    x = x.double()
    rot_dim = 2 * inv_freq.shape[0]
    angle = positions.double()[:, None] * inv_freq.double()[None, :]  # [T, rot_dim/2]
    phase = torch.polar(torch.ones_like(angle), angle)[:, None, :]
    rot = x[..., :rot_dim]
    if is_neox:
        pairs = torch.complex(rot[..., : rot_dim // 2], rot[..., rot_dim // 2 :]) * phase
        rotated = torch.cat((pairs.real, pairs.imag), dim=-1)
    else:
        pairs = torch.complex(rot[..., 0::2], rot[..., 1::2]) * phase
        rotated = torch.stack((pairs.real, pairs.imag), dim=-1).flatten(-2)
    return torch.cat((rotated, x[..., rot_dim:]), dim=-1)


def cos_sin_cache(max_pos: int, rot_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cache [max_pos, rot_dim] float32, inv_freq [rot_dim/2] float64)`` in the contract's layout."""
    inv_freq = 1.0 / base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    angle = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat((angle.cos(), angle.sin()), dim=-1).float(), inv_freq
