"""Block pool behaviour seen through the scheduler: allocation order, reverse free, lazy eviction."""

from __future__ import annotations

import numpy as np

from .core_helpers import make_scheduler, step_and_sample, tokens


def test_fresh_pool_hands_out_blocks_in_id_order() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(10))
    s.step()
    assert s.debug_block_tables() == {1: [0, 1, 2]}
    assert s.debug_free_list() == [3, 4, 5, 6, 7]


def test_finished_request_frees_blocks_in_reverse_order_at_the_mru_end() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(12))
    step_and_sample(s, finish=(1,))
    assert s.debug_block_tables() == {}
    assert s.debug_free_list() == [3, 4, 5, 6, 7, 2, 1, 0]
    assert s.debug_ref_counts().tolist() == [0] * 8


def test_freed_blocks_stay_cached_until_reallocated() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(12))
    step_and_sample(s, finish=(1,))
    before = s.debug_cached_blocks()
    assert sorted(before) == [0, 1, 2]
    # 24 fresh tokens take the 5 never-used blocks and then the LRU freed one: block 2, the
    # tail of request 1's chain (freed first because the free walks backwards).
    s.add_request(2, tokens(24, start=100))
    step_and_sample(s, finish=(2,))
    after = s.debug_cached_blocks()
    assert after[2] != before[2]  # evicted at reallocation, then re-indexed with request 2's tokens
    assert (after[0], after[1]) == (before[0], before[1])
    s.add_request(3, tokens(13))  # request 1's prompt plus one token: 3 full blocks could hit
    s.step()
    assert s.num_cached_tokens(3) == 8  # only blocks 0 and 1 survived
    assert s.debug_block_tables()[3][:2] == [0, 1]


def test_prefix_hit_takes_a_cached_block_off_the_middle_of_the_free_list() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(12))
    step_and_sample(s, finish=(1,))
    s.add_request(2, tokens(12))
    s.step()
    free = s.debug_free_list()
    assert 0 not in free and 1 not in free
    assert s.debug_ref_counts()[[0, 1]].tolist() == [1, 1]
    assert s.num_cached_tokens(2) == 8


def test_shared_prefix_blocks_carry_one_reference_per_holder() -> None:
    s = make_scheduler(num_blocks=16, block_size=4)
    s.add_request(1, tokens(9))
    step_and_sample(s)
    s.add_request(2, tokens(9))
    step_and_sample(s)
    tables = s.debug_block_tables()
    shared = set(tables[1]) & set(tables[2])
    assert shared == {0, 1}
    refs = s.debug_ref_counts()
    assert refs[[0, 1]].tolist() == [2, 2]
    assert all(refs[b] == 1 for b in set(tables[1]) ^ set(tables[2]))
    s.check_invariants()


def test_abort_returns_every_block_to_the_pool() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(10))
    s.add_request(2, tokens(6, start=50))
    step_and_sample(s)
    assert s.stats()["num_used_blocks"] == 5
    assert s.abort(1)
    assert s.stats()["num_free_blocks"] == 6
    assert s.debug_block_tables().keys() == {2}
    assert int(np.sum(s.debug_ref_counts())) == 2
