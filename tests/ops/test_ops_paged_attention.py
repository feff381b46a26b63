"""paged_attention: C++ ("cpu") and torch backends against the float64 gathered-page oracle."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch
from bastion.ops import cpu_backend

from ..helpers.paged_batches import PagedBatch, attention_oracle, make_paged_batch

FP32_TOL = {"atol": 2e-5, "rtol": 1e-5}

# (seq_lens, query_lens): seq_len 1, block_size - 1 / block_size / block_size + 1, prefill, mixed.
CASES = {
    "decode": ([1, 15, 16, 17, 70], [1, 1, 1, 1, 1]),
    "prefill": ([1, 15, 16, 17, 40], [1, 15, 16, 17, 40]),
    "mixed": ([33, 5, 64, 2, 17], [1, 5, 7, 1, 17]),
}


def _batch(case: str, *, group: int, head_dim: int, block_size: int = 16, seed: int = 0) -> PagedBatch:
    seq_lens, query_lens = CASES[case]
    return make_paged_batch(
        query_lens, seq_lens, num_kv_heads=2, group=group, head_size=head_dim, block_size=block_size, seed=seed
    )


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_matches_oracle(backend: str, case: str, group: int, head_dim: int) -> None:
    batch = _batch(case, group=group, head_dim=head_dim, seed=group * head_dim)
    out = ops.paged_attention(*batch.args(), backend=backend)
    torch.testing.assert_close(out.double(), attention_oracle(batch), **FP32_TOL)


@pytest.mark.parametrize("block_size", [1, 8, 32])
@pytest.mark.parametrize("head_dim", [20, 72])  # dims that exercise the non-multiple-of-16 vector tails
def test_odd_block_sizes_and_head_dims(block_size: int, head_dim: int) -> None:
    batch = _batch("mixed", group=3, head_dim=head_dim, block_size=block_size, seed=block_size)
    out = ops.paged_attention(*batch.args(), backend="cpu")
    torch.testing.assert_close(out.double(), attention_oracle(batch), **FP32_TOL)


@pytest.mark.parametrize("window", [1, 8, 50])
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_sliding_window(window: int, backend: str) -> None:
    batch = _batch("mixed", group=3, head_dim=64, seed=window)
    out = ops.paged_attention(*batch.args(), sliding_window=window, backend=backend)
    torch.testing.assert_close(out.double(), attention_oracle(batch, sliding_window=window), **FP32_TOL)
    unwindowed = ops.paged_attention(*batch.args(), backend=backend)
    assert not torch.allclose(out, unwindowed), "a window shorter than the sequences must change the output"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_long_decode_split_across_threads(threads: int) -> None:
    """A few long single-token decodes are split over the KV range and merged by LSE."""
    batch = make_paged_batch([1, 1], [2000, 1500], num_kv_heads=2, group=3, head_size=64, block_size=16, seed=3)
    plan = cpu_backend._kernels.attention_plan(batch.seq_lens.numpy(), batch.cu_seqlens_q.numpy(), 2, 3, 0, threads)
    assert (plan["num_merges"] > 0) == (threads > 1)
    cpu_backend.set_num_threads(threads)
    try:
        out = ops.paged_attention(*batch.args(), backend="cpu")
    finally:
        cpu_backend.set_num_threads(None)
    torch.testing.assert_close(out.double(), attention_oracle(batch), **FP32_TOL)


def test_strided_q_out_and_custom_scale() -> None:
    """q sliced out of a fused qkv projection (row stride > H*D) and a preallocated out tensor."""
    batch = _batch("mixed", group=3, head_dim=64)
    tokens, heads, dim = batch.q.shape
    qkv = torch.randn(tokens, heads + 4, dim)
    qkv[:, :heads] = batch.q
    strided = PagedBatch(qkv[:, :heads], batch.k_cache, batch.v_cache, batch.block_table, batch.seq_lens,
                         batch.cu_seqlens_q)
    out = torch.full_like(batch.q, float("nan"))
    result = ops.paged_attention(*strided.args(), scale=0.05, out=out, backend="cpu")
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out.double(), attention_oracle(batch, scale=0.05), **FP32_TOL)


def test_int64_metadata_accepted() -> None:
    batch = _batch("mixed", group=1, head_dim=64)
    out = ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.block_table.long(), batch.seq_lens.long(),
                              batch.cu_seqlens_q.long(), backend="cpu")
    torch.testing.assert_close(out.double(), attention_oracle(batch), **FP32_TOL)


def test_plan_covers_every_key_once() -> None:
    """Decode splits tile [0, seq_len) over all kv heads; prefill tiles cover every (query, kv head)."""
    seq_lens, query_lens = [4000, 40], [1, 40]
    plan = cpu_backend._kernels.attention_plan(seq_lens, [0, 1, 41], 2, 3, 0, 8)
    items = plan["items"]
    spans = sorted((b, e) for s, h0, h1, _, _, b, e, p in items if s == 0 and (h0, h1) == (0, 2) and p >= 0)
    assert len(spans) > 1 and spans[0][0] == 0 and spans[-1][1] == seq_lens[0]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert plan["num_merges"] == 1 and plan["num_partials"] == len(spans)
    for kv_head in range(2):
        queries = sorted((qb, qe) for s, h0, h1, qb, qe, *_ in items if s == 1 and (h0, h1) == (kv_head, kv_head + 1))
        assert queries[0][0] == 0 and queries[-1][1] == query_lens[1]
        assert all(a[1] == b[0] for a, b in zip(queries, queries[1:], strict=False))


def test_validation_errors() -> None:
    batch = _batch("mixed", group=3, head_dim=64)
    with pytest.raises(ValueError, match="head_dim"):
        ops.paged_attention(batch.q[..., :32], *batch.args()[1:])
    with pytest.raises(ValueError, match="block_table has 4 rows"):
        ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.block_table[:4], *batch.args()[4:])
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ops.paged_attention(batch.q[:, :5], *batch.args()[1:])
    short = batch.seq_lens.clone()
    short[2] = 3  # fewer cached tokens than the sequence's 7 queries
    with pytest.raises(ValueError, match="seq_len 3 < its 7 queries"):
        ops.paged_attention(*batch.args()[:4], short, batch.cu_seqlens_q, backend="cpu")
    bad_table = batch.block_table.clone()
    bad_table[0, 0] = 10_000
    with pytest.raises(ValueError, match="outside the cache"):
        ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, bad_table, *batch.args()[4:], backend="cpu")
    with pytest.raises(ValueError, match="float32"):
        ops.paged_attention(batch.q.half(), batch.k_cache.half(), batch.v_cache.half(), *batch.args()[3:],
                            backend="cpu")


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("group", "head_dim"), [(1, 64), (8, 128), (3, 72)])  # 72: the vector tails
def test_fp16_caches_match_the_oracle_of_the_same_values(backend: str, case: str, group: int, head_dim: int) -> None:
    """fp32 queries over fp16 caches (the CPU default, ``kv_cache_dtype="auto"``): the C++ kernels read
    the halves exactly, so the result is the fp64 oracle of those fp16 values to fp32 rounding."""
    batch = _batch(case, group=group, head_dim=head_dim, seed=7 * group + head_dim)
    half = PagedBatch(batch.q, batch.k_cache.half(), batch.v_cache.half(), batch.block_table, batch.seq_lens,
                      batch.cu_seqlens_q)
    out = ops.paged_attention(*half.args(), backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), attention_oracle(half), **FP32_TOL)


def test_fp16_caches_split_decode_and_sliding_window() -> None:
    batch = make_paged_batch([1, 1], [2000, 1500], num_kv_heads=2, group=3, head_size=64, block_size=16, seed=4)
    half = PagedBatch(batch.q, batch.k_cache.half(), batch.v_cache.half(), batch.block_table, batch.seq_lens,
                      batch.cu_seqlens_q)
    cpu_backend.set_num_threads(2)
    try:
        for window in (None, 100):
            out = ops.paged_attention(*half.args(), sliding_window=window, backend="cpu")
            torch.testing.assert_close(out.double(), attention_oracle(half, sliding_window=window), **FP32_TOL)
    finally:
        cpu_backend.set_num_threads(None)
