"""reshape_and_cache: rows land in their slots, -1 slots are skipped, every other slot is untouched."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch

NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM = 6, 4, 3, 20


def _caches(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shape = (NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    return torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("slot_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
def test_writes_slots_and_skips_padding(backend: str, slot_dtype: torch.dtype, cache_dtype: torch.dtype) -> None:
    """fp16 caches get each fp32 row rounded to nearest even, exactly as torch's conversion does."""
    k_cache, v_cache = _caches(cache_dtype)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    slots = torch.tensor([5, -1, 0, 23, -1, 12], dtype=slot_dtype)
    key = torch.randn(len(slots), KV_HEADS, HEAD_DIM)
    value = torch.randn(len(slots), KV_HEADS, HEAD_DIM)
    ops.reshape_and_cache(key, value, k_cache, v_cache, slots, backend=backend)

    expected_k, expected_v = k_before.view(-1, KV_HEADS, HEAD_DIM).clone(), v_before.view(-1, KV_HEADS, HEAD_DIM).clone()
    for token, slot in enumerate(slots.tolist()):
        if slot >= 0:
            expected_k[slot], expected_v[slot] = key[token].to(cache_dtype), value[token].to(cache_dtype)
    assert torch.equal(k_cache.view(-1, KV_HEADS, HEAD_DIM), expected_k)
    assert torch.equal(v_cache.view(-1, KV_HEADS, HEAD_DIM), expected_v)
    assert not torch.equal(k_cache, k_before), "the written slots must have changed"


def test_strided_key_from_fused_projection() -> None:
    """key/value sliced out of a [T, heads, D] qkv tensor are read through their strides."""
    k_cache, v_cache = _caches()
    qkv = torch.randn(5, 2 + 2 * KV_HEADS, HEAD_DIM)
    key, value = qkv[:, 2 : 2 + KV_HEADS], qkv[:, 2 + KV_HEADS :]
    slots = torch.tensor([1, 2, 3, 4, 9])
    ops.reshape_and_cache(key, value, k_cache, v_cache, slots, backend="cpu")
    assert torch.equal(k_cache.view(-1, KV_HEADS, HEAD_DIM)[slots], key)
    assert torch.equal(v_cache.view(-1, KV_HEADS, HEAD_DIM)[slots], value)


def test_long_prefill_uses_threads_and_matches_torch() -> None:
    """>= 256 tokens take the multi-threaded path; the result must equal the torch backend's."""
    shape = (128, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    cpu_k, cpu_v, torch_k, torch_v = (torch.zeros(shape) for _ in range(4))
    slots = torch.randperm(128 * BLOCK_SIZE)[:300]
    slots[::7] = -1
    key, value = torch.randn(300, KV_HEADS, HEAD_DIM), torch.randn(300, KV_HEADS, HEAD_DIM)
    ops.reshape_and_cache(key, value, cpu_k, cpu_v, slots, backend="cpu")
    ops.reshape_and_cache(key, value, torch_k, torch_v, slots, backend="torch")
    assert torch.equal(cpu_k, torch_k) and torch.equal(cpu_v, torch_v)
    assert int((cpu_k.view(-1, KV_HEADS, HEAD_DIM).abs().sum((1, 2)) > 0).sum()) == int((slots >= 0).sum())


def test_bad_input() -> None:
    k_cache, v_cache = _caches()
    before = k_cache.clone()
    key = torch.randn(2, KV_HEADS, HEAD_DIM)
    with pytest.raises(ValueError, match="outside the cache"):
        ops.reshape_and_cache(key, key, k_cache, v_cache, torch.tensor([0, NUM_BLOCKS * BLOCK_SIZE]), backend="cpu")
    assert torch.equal(k_cache, before), "a rejected call must not write anything"
    with pytest.raises(ValueError, match="slot_mapping has 3 entries for 2 tokens"):
        ops.reshape_and_cache(key, key, k_cache, v_cache, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="per token"):
        ops.reshape_and_cache(key[:, :2], key[:, :2], k_cache, v_cache, torch.tensor([0, 1]))
