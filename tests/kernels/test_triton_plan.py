"""Host-side attention planner: split counts, tile shapes and grid bounds (pure Python, no kernels run)."""

from __future__ import annotations

import pytest
import torch
from bastion.kernels import choose_num_splits, make_plan, plan_attention


def test_no_split_when_the_unsplit_grid_fills_the_gpu():
    # 64 sequences x 8 KV heads = 512 CTAs on 132 SMs
    plan = plan_attention(64, 64, 32, 8, 128, 4096, num_sms=132)
    assert plan.num_splits == 1


def test_small_batch_long_context_is_split_to_fill_the_sms():
    plan = plan_attention(2, 2, 32, 8, 128, 8192, num_sms=132)  # 16 CTAs
    # Best wave efficiency is 128/132 (8 or 16 splits); the smallest within 85% of it is 7 (112/132).
    assert plan.num_splits == 7


def test_splits_never_exceed_half_the_tiles_of_the_longest_context():
    # 40 tokens of context = 3 decode tiles of 16: at most one split (MIN_TILES_PER_SPLIT = 2)
    assert plan_attention(1, 1, 8, 2, 64, 40, num_sms=132).num_splits == 1
    assert choose_num_splits(num_ctas=2, max_tiles=8, num_sms=132) <= 4


def test_wave_efficiency_rule_picks_the_smallest_good_split_count():
    # 66 CTAs on 132 SMs: 2 splits give exactly one full wave
    assert choose_num_splits(num_ctas=66, max_tiles=1000, num_sms=132) == 2


@pytest.mark.parametrize("group", [1, 2, 3, 4, 8, 16, 32])
def test_query_rows_pack_the_gqa_group_into_at_least_16_rows(group):
    plan = plan_attention(10, 2, 2 * group, 2, 64, 100, num_sms=132)
    assert plan.block_m >= 16 and plan.block_m & (plan.block_m - 1) == 0
    assert plan.block_q * plan.group <= plan.block_m
    assert plan.block_q >= 1


def test_grid_bound_covers_every_query_block_of_any_varlen_batch():
    # Sequence s starts at block cu[s] // block_q + s, and needs ceil(len / block_q) blocks.
    plan = plan_attention(29, 4, 8, 2, 64, 100, num_sms=132)
    cu = [0, 1, 14, 15, 29]
    for s in range(4):
        first = cu[s] // plan.block_q + s
        needed = -(-(cu[s + 1] - cu[s]) // plan.block_q)
        assert first + needed <= plan.num_q_blocks
        if s + 1 < 4:
            assert first + needed <= cu[s + 1] // plan.block_q + s + 1  # no overlap with the next sequence


def test_head_sizes_are_padded_to_a_power_of_two():
    assert plan_attention(1, 1, 4, 2, 96, 50, num_sms=132).head_pad == 128
    assert plan_attention(1, 1, 4, 2, 64, 50, num_sms=132).head_pad == 64


def test_prefill_uses_wider_tiles_than_decode():
    assert plan_attention(8, 8, 4, 2, 64, 50, num_sms=132).tile == 16
    assert plan_attention(9, 8, 4, 2, 64, 50, num_sms=132).tile == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_sms": 0}, "num_sms"),
        ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"num_splits": 0}, "num_splits"),
        ({"num_tokens": 0}, "num_tokens"),
    ],
)
def test_planner_rejects_bad_sizes(kwargs, message):
    args = {"num_tokens": 4, "num_seqs": 2, "num_heads": 8, "num_kv_heads": 2, "head_size": 64,
            "max_context_len": 100, "num_sms": 132, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_attention(**args)


def test_host_known_context_length_replaces_the_block_table_capacity_bound():
    q = torch.empty((1, 8, 64))
    k_cache = torch.empty((70, 16, 2, 64))
    block_table = torch.zeros((1, 64), dtype=torch.int32)  # capacity 1024 tokens, padded
    assert make_plan(q, k_cache, block_table, num_sms=132).num_splits > 1
    assert make_plan(q, k_cache, block_table, num_sms=132, max_context_len=40).num_splits == 1
