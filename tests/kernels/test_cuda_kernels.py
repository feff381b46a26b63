"""The CUDA kernels, through the ``cuda`` ops backend, against a float64 reference on gathered pages.

GPU only: skipped (with the reason) without a CUDA build of bastion and a usable device. The
reference uses plain torch ops in float64 on the same (already rounded) inputs, so only the
kernels' own arithmetic is measured against the tolerances.
"""

from __future__ import annotations

import bastion
import pytest
import torch
from bastion import _core

pytestmark = pytest.mark.skipif(
    not bastion.cuda_available() or not torch.cuda.is_available(),
    reason="needs a CUDA build of bastion (BASTION_CUDA=ON), torch with CUDA and a GPU",
)

TOLERANCE = {torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2}, torch.float16: {"rtol": 2e-3, "atol": 2e-3}}


@pytest.fixture(scope="module")
def cuda_backend():
    """The backend module under test."""
    from bastion.ops import cuda_backend

    return cuda_backend


class DecodeBatch:
    """Random q and paged K/V for given sequence lengths, pages shuffled across the cache."""

    def __init__(
        self, seq_lens: list[int], num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
        block_size: int = 16, seed: int = 0,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        blocks_per_seq = [-(-n // block_size) for n in seq_lens]
        max_blocks = max(blocks_per_seq)
        num_blocks = sum(blocks_per_seq) + 3  # spare pages that no sequence owns
        page_ids = torch.randperm(num_blocks, generator=gen)
        table = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
        used = 0
        for i, n in enumerate(blocks_per_seq):
            table[i, :n] = page_ids[used:used + n]
            used += n
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.q = torch.randn(len(seq_lens), num_heads, head_dim, generator=gen).to(dtype).cuda()
        self.k_cache = torch.randn(shape, generator=gen).to(dtype).cuda()
        self.v_cache = torch.randn(shape, generator=gen).to(dtype).cuda()
        self.block_table = table.cuda()
        self.seq_lens = torch.tensor(seq_lens, dtype=torch.int32).cuda()
        self.cu_seqlens_q = torch.arange(len(seq_lens) + 1, dtype=torch.int32).cuda()

    def args(self) -> tuple[torch.Tensor, ...]:
        """Positional arguments of ``paged_attention``."""
        return self.q, self.k_cache, self.v_cache, self.block_table, self.seq_lens, self.cu_seqlens_q


def reference_decode(batch: DecodeBatch, scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """softmax(q K^T * scale) V per sequence in float64, K/V gathered page by page; [R, H, D]."""
    q = batch.q.double().cpu()
    k_cache, v_cache = batch.k_cache.double().cpu(), batch.v_cache.double().cpu()
    table, lens = batch.block_table.cpu().long(), batch.seq_lens.cpu().tolist()
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // num_kv_heads
    out = torch.zeros_like(q)
    for i, n in enumerate(lens):
        pos = torch.arange(n)
        if sliding_window is not None:
            pos = pos[pos >= n - sliding_window]
        pages, offsets = table[i, pos // block_size], pos % block_size
        k = k_cache[pages, offsets].repeat_interleave(group, dim=1)  # [n, H, D]
        v = v_cache[pages, offsets].repeat_interleave(group, dim=1)
        probs = torch.softmax(torch.einsum("hd,nhd->hn", q[i], k) * scale, dim=-1)
        out[i] = torch.einsum("hn,nhd->hd", probs, v)
    return out


def num_splits(batch: DecodeBatch, sliding_window: int = 0) -> int:
    """Splits the kernel will use for ``batch`` on this device."""
    props = torch.cuda.get_device_properties(batch.q.device)
    return _core.cuda.decode_plan(
        num_seqs=batch.q.shape[0], num_heads=batch.q.shape[1], num_kv_heads=batch.k_cache.shape[2],
        head_dim=batch.q.shape[2], block_size=batch.k_cache.shape[1], max_blocks_per_seq=batch.block_table.shape[1],
        sliding_window=sliding_window, num_sms=props.multi_processor_count,
    )["num_splits"]


def assert_matches_reference(out: torch.Tensor, batch: DecodeBatch, sliding_window: int | None = None) -> None:
    expected = reference_decode(batch, batch.q.shape[2] ** -0.5, sliding_window)
    torch.testing.assert_close(out.double().cpu(), expected, **TOLERANCE[out.dtype])


SEQ_LEN_CASES = {
    "page_edges": [1, 15, 16, 17, 100],  # block_size 16: one short of, exactly at and past a page
    "long_split": [5000, 3],  # few CTAs: split-KV and the merge kernel run
    "batch64": [int(n) for n in torch.randint(1, 2049, (64,), generator=torch.Generator().manual_seed(1))],
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize(
    ("num_heads", "num_kv_heads"), [(4, 4), (8, 2), (32, 8), (12, 4), (32, 2)],
    ids=["mha", "gqa4", "llama8b", "group3", "group16"],
)
@pytest.mark.parametrize("lens", list(SEQ_LEN_CASES), ids=list(SEQ_LEN_CASES))
def test_decode_matches_float64_reference(
    cuda_backend, dtype: torch.dtype, head_dim: int, num_heads: int, num_kv_heads: int, lens: str
) -> None:
    batch = DecodeBatch(SEQ_LEN_CASES[lens], num_heads, num_kv_heads, head_dim, dtype)
    assert_matches_reference(cuda_backend.paged_attention(*batch.args()), batch)


def test_long_single_sequence_takes_the_split_path_and_matches(cuda_backend) -> None:
    batch = DecodeBatch([8192], 32, 8, 128, torch.bfloat16)
    assert num_splits(batch) > 1
    assert_matches_reference(cuda_backend.paged_attention(*batch.args()), batch)


@pytest.mark.parametrize("window", [7, 300, 1000])
def test_sliding_window(cuda_backend, window: int) -> None:
    batch = DecodeBatch([3000, 500, 5], 8, 2, 128, torch.bfloat16)
    out = cuda_backend.paged_attention(*batch.args(), sliding_window=window)
    assert_matches_reference(out, batch, sliding_window=window)


def test_block_size_32_and_explicit_scale(cuda_backend) -> None:
    batch = DecodeBatch([31, 32, 33, 700], 8, 2, 64, torch.float16, block_size=32)
    out = cuda_backend.paged_attention(*batch.args(), scale=0.05)
    expected = reference_decode(batch, 0.05)
    torch.testing.assert_close(out.double().cpu(), expected, **TOLERANCE[torch.float16])


def test_strided_q_from_fused_qkv_and_out_buffer(cuda_backend) -> None:
    batch = DecodeBatch([40, 90], 8, 2, 128, torch.bfloat16)
    qkv = torch.zeros(2, (8 + 2 * 2) * 128, dtype=torch.bfloat16, device="cuda")
    q_view = qkv[:, : 8 * 128].view(2, 8, 128)
    q_view.copy_(batch.q)
    batch.q = q_view  # strided rows: token stride 1536, not 1024
    out = torch.full_like(q_view, float("nan")).contiguous()
    returned = cuda_backend.paged_attention(*batch.args(), out=out)
    assert returned.data_ptr() == out.data_ptr()
    assert_matches_reference(out, batch)


def test_dispatcher_routes_decode_to_the_cuda_backend(cuda_backend) -> None:
    from bastion import ops

    batch = DecodeBatch([64, 65], 8, 2, 128, torch.bfloat16)
    via_ops = ops.paged_attention(*batch.args(), backend="cuda")
    torch.testing.assert_close(via_ops, cuda_backend.paged_attention(*batch.args()), rtol=0, atol=0)


def test_head_dims_the_kernel_lacks_go_to_the_next_backend_under_auto(cuda_backend) -> None:
    """head_dim 96 (e.g. Phi-3): the CUDA kernel declines (Unsupported) and "auto" serves it elsewhere."""
    from bastion import ops
    from bastion.ops.dispatch import Unsupported

    batch = DecodeBatch([40, 300], 8, 2, 96, torch.float16)
    with pytest.raises(Unsupported, match="head_dim"):
        cuda_backend.paged_attention(*batch.args())
    assert_matches_reference(ops.paged_attention(*batch.args()), batch)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cache_write_skips_padding_slots(cuda_backend, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    num_blocks, block_size, num_kv_heads, head_dim = 6, 16, 2, 64
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, generator=gen).to(dtype).cuda()
    v_cache = torch.randn(k_cache.shape, generator=gen).to(dtype).cuda()
    k_before, v_before = k_cache.clone(), v_cache.clone()
    slots = torch.tensor([5, -1, 17, 95, -1, 40], dtype=torch.int64)
    key = torch.randn(len(slots), num_kv_heads, head_dim, generator=gen).to(dtype).cuda()
    value = torch.randn(key.shape, generator=gen).to(dtype).cuda()

    cuda_backend.reshape_and_cache(key, value, k_cache, v_cache, slots.cuda())

    flat_k, flat_v = k_cache.view(-1, num_kv_heads, head_dim), v_cache.view(-1, num_kv_heads, head_dim)
    expected_k = k_before.view(-1, num_kv_heads, head_dim).clone()
    expected_v = v_before.view(-1, num_kv_heads, head_dim).clone()
    keep = slots >= 0
    expected_k[slots[keep].cuda()] = key[keep.cuda()]
    expected_v[slots[keep].cuda()] = value[keep.cuda()]
    assert torch.equal(flat_k, expected_k)  # written rows exact, every other row untouched
    assert torch.equal(flat_v, expected_v)


def test_cache_write_from_strided_key_value(cuda_backend) -> None:
    num_kv_heads, head_dim = 2, 128
    kv = torch.randn(3, 2 * num_kv_heads * head_dim, dtype=torch.bfloat16, device="cuda")
    key = kv[:, : num_kv_heads * head_dim].view(3, num_kv_heads, head_dim)
    value = kv[:, num_kv_heads * head_dim:].view(3, num_kv_heads, head_dim)
    k_cache = torch.zeros(2, 16, num_kv_heads, head_dim, dtype=torch.bfloat16, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    slots = torch.tensor([0, 31, 16], dtype=torch.int64, device="cuda")
    cuda_backend.reshape_and_cache(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache.view(-1, num_kv_heads, head_dim)[slots], key)
    assert torch.equal(v_cache.view(-1, num_kv_heads, head_dim)[slots], value)


def test_smoke_decode_and_cache_write(cuda_backend) -> None:
    """Small case for compute-sanitizer (scripts/gpu-check.sh): KV write, then split-KV decode."""
    batch = DecodeBatch([600, 17], 8, 2, 64, torch.bfloat16)
    slots = torch.tensor([3, -1], dtype=torch.int64, device="cuda")
    new = torch.randn(2, 2, 64, dtype=torch.bfloat16, device="cuda")
    cuda_backend.reshape_and_cache(new, new, batch.k_cache, batch.v_cache, slots)
    assert num_splits(batch) > 1
    out = cuda_backend.paged_attention(*batch.args())
    torch.cuda.synchronize()
    assert_matches_reference(out, batch)
