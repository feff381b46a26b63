"""reshape_and_cache (KV write) in the Triton interpreter: exact copies, -1 slots skipped, canaries intact."""

from __future__ import annotations

import pytest
import torch
from bastion import kernels
from bastion.ops import reshape_and_cache as ops_reshape_and_cache
from bastion.ops import torch_ref

CANARY = -777.0


def _caches(num_blocks: int, block_size: int, heads: int, head_size: int, dtype: torch.dtype,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (num_blocks, block_size, heads, head_size)
    return (torch.full(shape, CANARY, dtype=dtype, device=device),
            torch.full(shape, CANARY, dtype=dtype, device=device))


@pytest.mark.parametrize("block_size", [15, 16, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_writes_exactly_the_mapped_slots(block_size, dtype, device):
    gen = torch.Generator().manual_seed(block_size)
    num_blocks, heads, head_size, tokens = 5, 2, 96, 7
    key = torch.randn((tokens, heads, head_size), generator=gen).to(device, dtype)
    value = torch.randn((tokens, heads, head_size), generator=gen).to(device, dtype)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens].to(device)
    slots[[1, 4]] = -1  # padded tokens
    k_cache, v_cache = _caches(num_blocks, block_size, heads, head_size, dtype, device)
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slots)
    k_ref, v_ref = _caches(num_blocks, block_size, heads, head_size, dtype, device)
    torch_ref.reshape_and_cache(key, value, k_ref, v_ref, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    written = (k_cache != CANARY).all(-1).all(-1).flatten().nonzero().flatten()
    assert sorted(written.tolist()) == sorted(slots[slots >= 0].tolist())  # nothing else touched


def test_strided_key_value_from_a_fused_qkv_projection_are_read_correctly(device):
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn((4, 3, 2, 64), generator=gen).to(device)  # [T, q|k|v, heads, D]: strided key/value views
    key, value = qkv[:, 1], qkv[:, 2]
    slots = torch.tensor([3, -1, 0, 9], device=device)
    k_cache, v_cache = _caches(2, 8, 2, 64, torch.float32, device)
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slots)
    flat_k, flat_v = k_cache.view(16, 2, 64), v_cache.view(16, 2, 64)
    for token, slot in enumerate(slots.tolist()):
        if slot >= 0:
            assert torch.equal(flat_k[slot], key[token]) and torch.equal(flat_v[slot], value[token])
    assert (flat_k[[1, 2, 4, 5, 6, 7, 8, 10]] == CANARY).all()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 70000 -> fp16 inf, on purpose
def test_float32_values_are_cast_into_a_float16_cache(device):
    key = torch.tensor([[[1.0 / 3.0, 70000.0]]], device=device)
    k_cache, v_cache = _caches(1, 4, 1, 2, torch.float16, device)
    kernels.reshape_and_cache(key, key, k_cache, v_cache, torch.tensor([2], device=device))
    assert k_cache[0, 2, 0, 0].item() == torch.tensor(1.0 / 3.0).half().item()
    assert torch.isinf(k_cache[0, 2, 0, 1])  # out of fp16 range, as torch's own cast does


def test_ops_layer_routes_to_triton_and_matches_torch(device):
    gen = torch.Generator().manual_seed(1)
    key, value = (torch.randn((5, 2, 64), generator=gen).to(device) for _ in range(2))
    slots = torch.tensor([0, 17, -1, 5, 30], device=device)
    caches = [_caches(2, 16, 2, 64, torch.float32, device) for _ in range(2)]
    ops_reshape_and_cache(key, value, *caches[0], slots, backend="triton")
    ops_reshape_and_cache(key, value, *caches[1], slots, backend="torch")
    assert torch.equal(caches[0][0], caches[1][0]) and torch.equal(caches[0][1], caches[1][1])


def test_triton_backend_rejects_a_float64_cache(device):
    from bastion.ops import triton_backend

    key = torch.randn((1, 1, 4), dtype=torch.float64, device=device)
    k_cache, v_cache = _caches(1, 2, 1, 4, torch.float64, device)
    with pytest.raises(ValueError, match="k_cache has dtype torch.float64"):
        triton_backend.reshape_and_cache(key, key, k_cache, v_cache, torch.tensor([0], device=device))
