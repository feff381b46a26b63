"""Step planning: chunked prefill, token budget, sequence cap, flat output consistency, length cap."""

from __future__ import annotations

import numpy as np

from .core_helpers import make_scheduler, step_and_sample, tokens


def test_long_prompt_is_prefilled_in_budget_sized_chunks() -> None:
    s = make_scheduler(max_num_batched_tokens=8)
    s.add_request(1, tokens(20))
    seen = []
    for _ in range(3):
        out = s.step()
        seen.append((out.num_scheduled_tokens.tolist(), out.positions[0].item(), out.do_sample.tolist()))
        s.update(np.full(int(out.do_sample.sum()), 5, dtype=np.int32), np.zeros(0, dtype=np.int64))
    assert seen == [([8], 0, [0]), ([8], 8, [0]), ([4], 16, [1])]
    assert s.num_tokens(1) == 21


def test_decode_and_prefill_chunk_share_a_step_running_first() -> None:
    s = make_scheduler(max_num_batched_tokens=6)
    s.add_request(1, tokens(3))
    step_and_sample(s)
    s.add_request(2, tokens(10, start=50))
    out = s.step()
    assert out.req_ids.tolist() == [1, 2]
    assert out.num_scheduled_tokens.tolist() == [1, 5]
    assert out.do_sample.tolist() == [1, 0]
    assert out.logits_indices.tolist() == [0]
    assert out.cu_seqlens_q.tolist() == [0, 1, 6]


def test_token_budget_bounds_every_step() -> None:
    s = make_scheduler(max_num_batched_tokens=10, max_num_seqs=8)
    for i in range(5):
        s.add_request(i, tokens(7, start=10 * i))
    totals = [sum(step_and_sample(s)[1]) for _ in range(6)]
    assert max(totals) <= 10
    assert totals[:3] == [10, 10, 10]


def test_max_num_seqs_caps_running_requests() -> None:
    s = make_scheduler(max_num_seqs=2)
    for i in range(5):
        s.add_request(i, tokens(3, start=10 * i))
    ids, *_ = step_and_sample(s)
    assert ids == [0, 1]
    assert s.stats()["num_running"] == 2 and s.stats()["num_waiting"] == 3


def test_long_prefill_threshold_caps_each_chunk() -> None:
    s = make_scheduler(max_num_batched_tokens=64, long_prefill_token_threshold=5)
    s.add_request(1, tokens(12))
    s.add_request(2, tokens(3, start=100))
    ids, counts, *_ = step_and_sample(s)
    assert (ids, counts) == ([1, 2], [5, 3])


def test_flat_arrays_agree_with_block_tables() -> None:
    s = make_scheduler(block_size=4, max_num_batched_tokens=16)
    s.add_request(1, tokens(6))
    s.add_request(2, tokens(13, start=40))
    step_and_sample(s)
    out = s.step()
    tables = s.debug_block_tables()
    for r, req_id in enumerate(out.req_ids.tolist()):
        lo, hi = out.cu_seqlens_q[r], out.cu_seqlens_q[r + 1]
        pos = out.positions[lo:hi]
        row = out.block_table[r]
        assert row[: len(tables[req_id])].tolist() == tables[req_id]
        assert not row[len(tables[req_id]):].any()
        assert (out.slot_mapping[lo:hi] == row[pos // 4] * 4 + pos % 4).all()
        assert out.seq_lens[r] == pos[-1] + 1
    assert out.block_table.shape == (2, s.max_blocks_per_seq)


def test_request_is_finished_by_length_at_max_model_len() -> None:
    s = make_scheduler(max_model_len=8)
    s.add_request(1, tokens(6))
    step_and_sample(s)
    assert s.num_tokens(1) == 7
    step_and_sample(s)  # 8 tokens = max_model_len: stopped here, never computed past it
    assert s.finished_by_length(1)
    ids, _, _, finished = step_and_sample(s)
    assert (ids, finished) == ([], [1])


def test_pool_size_also_limits_request_length() -> None:
    s = make_scheduler(num_blocks=2, block_size=4, max_model_len=100)
    s.add_request(1, tokens(7))
    step_and_sample(s)
    assert s.finished_by_length(1)
    assert s.stats()["num_free_blocks"] == 2
