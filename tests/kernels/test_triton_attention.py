"""Paged attention kernels (unified and split-KV) against a float64 oracle, in the Triton interpreter."""

from __future__ import annotations

import math

import pytest
import torch
from bastion import kernels
from bastion.ops import paged_attention as ops_paged_attention

# (q_lens, seq_lens, group, head_size, block_size, dtype, sliding_window): tiny shapes, edge cases.
UNIFIED_CASES = {
    "decode seq_len 1, MHA": ([1, 1], [1, 40], 1, 64, 16, torch.float32, None),
    "decode block_size-1 GQA4": ([1, 1, 1], [15, 31, 100], 4, 64, 15, torch.float32, None),
    "decode block_size+1 GQA8 fp16": ([1, 1], [17, 290], 8, 64, 17, torch.float16, None),
    "prefill head 96 (padded) GQA4": ([23], [23], 4, 96, 16, torch.float32, None),
    "mixed prefill+decode fp16 head 96": ([9, 1, 1, 5], [9, 120, 33, 70], 4, 96, 16, torch.float16, None),
    "chunked prefill with context, window": ([6, 1], [150, 300], 4, 64, 16, torch.float32, 40),
    "sliding window larger than context GQA8": ([3, 1], [20, 60], 8, 64, 17, torch.float16, 1000),
    "GQA3: 16 rows hold 5 tokens + 1 idle row": ([7, 1], [40, 50], 3, 64, 16, torch.float32, None),
}


@pytest.mark.parametrize("case", list(UNIFIED_CASES), ids=list(UNIFIED_CASES))
def test_unified_attention_matches_float64_oracle(case, make_paged_batch, attention_oracle, assert_close_to_oracle):
    q_lens, seq_lens, group, head_size, block_size, dtype, window = UNIFIED_CASES[case]
    batch = make_paged_batch(q_lens, seq_lens, group=group, head_size=head_size, block_size=block_size, dtype=dtype)
    plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132, num_splits=1)
    out = kernels.paged_attention(*batch.args(), sliding_window=window, plan=plan)
    assert out.dtype == dtype and out.shape == batch.q.shape
    assert_close_to_oracle(out, attention_oracle(batch, window))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_splits", [3, 8])
def test_split_kv_matches_oracle_even_with_more_splits_than_tiles(dtype, num_splits, make_paged_batch,
                                                                  attention_oracle, assert_close_to_oracle):
    # 20 tokens = 2 decode tiles: with 8 splits most splits of that sequence are empty.
    batch = make_paged_batch([1, 1, 4], [20, 250, 64], group=4, head_size=64, block_size=16, dtype=dtype, seed=1)
    plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132, num_splits=num_splits)
    assert_close_to_oracle(kernels.paged_attention(*batch.args(), plan=plan), attention_oracle(batch))


def test_empty_splits_write_minus_inf_lse_and_zero_output(make_paged_batch):
    batch = make_paged_batch([1], [20], group=4, head_size=64, block_size=16, dtype=torch.float32, seed=2)
    plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132, num_splits=8)
    assert plan.tile == 16  # 20 keys -> 2 tiles: splits 0 and 1 hold one tile each, 2..7 nothing
    partial, lse = kernels.split_kv_partials(*batch.args(), plan=plan, scale=0.125, sliding_window=None)
    assert torch.isfinite(lse[:, :, :2]).all()
    assert torch.isneginf(lse[:, :, 2:]).all()
    assert (partial[:, :, 2:] == 0).all()


def test_split_lse_is_the_log_sum_exp_of_the_scores(make_paged_batch):
    batch = make_paged_batch([1], [37], group=1, head_size=64, block_size=16, dtype=torch.float32, seed=3)
    plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132, num_splits=2)
    scale = 64 ** -0.5
    _, lse = kernels.split_kv_partials(*batch.args(), plan=plan, scale=scale, sliding_window=None)
    keys = batch.k_cache.double()[batch.block_table[0].long()].reshape(-1, 2, 64)[:37]
    scores = torch.einsum("hd,khd->hk", batch.q[0].double(), keys) * scale
    merged = torch.logsumexp(lse[0].double(), dim=-1)  # splits hold tiles [0, 2) and [2, 3)
    torch.testing.assert_close(merged, torch.logsumexp(scores, dim=-1), rtol=1e-6, atol=1e-6)
    # Split 0 covers keys 0..31 exactly.
    torch.testing.assert_close(lse[0, :, 0].double(), torch.logsumexp(scores[:, :32], -1), rtol=1e-6, atol=1e-6)


def test_planner_chosen_split_path_matches_oracle(make_paged_batch, attention_oracle, assert_close_to_oracle):
    batch = make_paged_batch([1, 1], [200, 90], group=4, head_size=64, block_size=16, dtype=torch.float32, seed=4)
    plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132)
    assert plan.num_splits > 1  # 4 CTAs on 132 SMs: the planner must split
    assert_close_to_oracle(kernels.paged_attention(*batch.args(), num_sms=132), attention_oracle(batch))


def test_out_argument_is_filled_and_returned(make_paged_batch, attention_oracle, assert_close_to_oracle):
    batch = make_paged_batch([2, 1], [5, 18], group=4, head_size=64, block_size=16, dtype=torch.float32, seed=5)
    out = torch.full_like(batch.q, math.nan)
    result = kernels.paged_attention(*batch.args(), out=out)
    assert result.data_ptr() == out.data_ptr()
    assert_close_to_oracle(out, attention_oracle(batch))


BF16_CASES = {  # (q_lens, seq_lens, group, head_size, block_size, sliding_window, num_splits or None = planner)
    "decode GQA4": ([1, 1, 1], [15, 300, 1], 4, 64, 16, None, 1),
    "decode split-KV GQA8 head 128": ([1, 1], [700, 40], 8, 128, 16, None, 4),
    "mixed prefill+decode head 96 window": ([9, 1, 5], [9, 120, 70], 4, 96, 16, 40, None),
}


@pytest.mark.skipif(kernels.interpreted(), reason="the interpreter's bf16 tl.dot multiplies raw bit patterns "
                    "(triton#11584): bf16 attention is checked on a GPU only")
@pytest.mark.parametrize("case", list(BF16_CASES), ids=list(BF16_CASES))
def test_bf16_attention_matches_float64_oracle_on_gpu(case, make_paged_batch, attention_oracle, assert_close_to_oracle):
    """bf16 is what the engine serves on a GPU; unified and split paths through the ops layer's Triton backend."""
    q_lens, seq_lens, group, head_size, block_size, window, num_splits = BF16_CASES[case]
    batch = make_paged_batch(q_lens, seq_lens, group=group, head_size=head_size, block_size=block_size,
                             dtype=torch.bfloat16, seed=11)
    if num_splits is None:
        out = ops_paged_attention(*batch.args(), sliding_window=window, backend="triton")
    else:
        plan = kernels.make_plan(batch.q, batch.k_cache, batch.block_table, num_sms=132, num_splits=num_splits)
        out = kernels.paged_attention(*batch.args(), sliding_window=window, plan=plan)
    assert out.dtype == torch.bfloat16
    assert_close_to_oracle(out, attention_oracle(batch, window))


def test_ops_triton_backend_equals_torch_backend(make_paged_batch):
    batch = make_paged_batch([4, 1], [30, 77], group=4, head_size=64, block_size=16, dtype=torch.float32, seed=6)
    triton_out = ops_paged_attention(*batch.args(), scale=0.3, sliding_window=50, backend="triton")
    torch_out = ops_paged_attention(*batch.args(), scale=0.3, sliding_window=50, backend="torch")
    torch.testing.assert_close(triton_out, torch_out, rtol=1e-5, atol=1e-5)


def test_int64_metadata_tensors_give_the_same_result(make_paged_batch):
    batch = make_paged_batch([3, 1], [40, 21], group=4, head_size=64, block_size=16, dtype=torch.float32, seed=7)
    as_int32 = ops_paged_attention(*batch.args(), backend="triton")
    batch.block_table, batch.seq_lens, batch.cu_seqlens_q = (
        t.long() for t in (batch.block_table, batch.seq_lens, batch.cu_seqlens_q))
    torch.testing.assert_close(ops_paged_attention(*batch.args(), backend="triton"), as_int32, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.__setattr__("q", b.q.double()), "dtype"),
        (lambda b: (b.__setattr__("k_cache", b.k_cache.half()), b.__setattr__("v_cache", b.v_cache.half())),
         "must equal q's dtype"),
        (lambda b: b.__setattr__("q", b.q.transpose(1, 2).contiguous().transpose(1, 2)), "contiguous last dim"),
        (lambda b: b.__setattr__("seq_lens", b.seq_lens[:1]), "seq_lens"),
    ],
    ids=["float64 q", "cache dtype differs", "strided head dim", "seq_lens too short"],
)
def test_triton_backend_rejects_bad_input_with_a_clear_error(mutate, message, make_paged_batch):
    from bastion.ops import triton_backend

    batch = make_paged_batch([1, 1], [5, 9], group=1, head_size=64, block_size=16, dtype=torch.float32)
    mutate(batch)
    with pytest.raises(ValueError, match=message):
        triton_backend.paged_attention(*batch.args())
