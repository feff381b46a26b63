"""Scheduler.append_tokens: grammar-forced tokens join a request without a step each (jump-forward)."""

from __future__ import annotations

import numpy as np
import pytest

from .core_helpers import NO_IDS, make_scheduler, step_and_sample, tokens


def test_forced_tokens_are_computed_with_the_last_sample_in_one_step() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(5))
    step_and_sample(s, token=40)  # prefill: 5 prompt tokens, sampled 40
    assert s.append_tokens(1, np.array([41, 42, 43], dtype=np.int32)) == 3
    assert s.num_tokens(1) == 9
    out = s.step()
    assert out.num_scheduled_tokens.tolist() == [4]  # 40 plus the three forced tokens
    assert out.input_ids.tolist() == [40, 41, 42, 43]
    assert out.positions.tolist() == [5, 6, 7, 8]
    assert out.do_sample.tolist() == [1] and out.logits_indices.tolist() == [3]
    s.update(np.array([44], dtype=np.int32), NO_IDS)
    assert s.num_tokens(1) == 10 and s.num_computed_tokens(1) == 9
    s.check_invariants()


def test_forced_tokens_survive_preemption_by_recompute() -> None:
    s = make_scheduler(num_blocks=4, block_size=4, max_num_seqs=2, max_model_len=16)
    s.add_request(1, tokens(6))
    s.add_request(2, tokens(6, start=100))
    step_and_sample(s, token=7)
    s.append_tokens(1, np.array([8, 9], dtype=np.int32))
    preempted: list[int] = []
    for _ in range(6):
        preempted += step_and_sample(s, token=7)[2]
    assert preempted, "the tiny pool must preempt someone"
    s.check_invariants()


def test_append_is_capped_at_the_longest_sequence_and_finishes_it() -> None:
    s = make_scheduler(max_model_len=8)
    s.add_request(1, tokens(5))
    step_and_sample(s, token=40)  # 6 tokens
    assert s.append_tokens(1, np.array([1, 2, 3, 4], dtype=np.int32)) == 2  # room for 2
    assert s.finished_by_length(1) and s.num_tokens(1) == 8
    assert s.step().finished_ids.tolist() == [1]
    assert s.stats()["num_free_blocks"] == s.stats()["num_total_blocks"]
    s.check_invariants()


def test_a_waiting_request_takes_them_too() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    assert s.append_tokens(1, np.array([9], dtype=np.int32)) == 1
    out = s.step()
    assert out.input_ids.tolist() == [0, 1, 2, 9] and out.do_sample.tolist() == [1]


@pytest.mark.parametrize(("case", "message"), [("unknown", "unknown request"), ("negative", "not a valid token"),
                                               ("finished", "is finished"), ("pending", "update")])
def test_bad_calls_are_refused_without_changes(case: str, message: str) -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    batch = np.array([5], dtype=np.int32)
    if case == "unknown":
        rid = 2
    elif case == "negative":
        rid, batch = 1, np.array([5, -1], dtype=np.int32)
    elif case == "finished":
        s.abort(1)
        rid = 1
    else:
        s.step()  # samples pending until update()
        rid = 1
    error = RuntimeError if case == "pending" else ValueError
    with pytest.raises(error, match=message):
        s.append_tokens(rid, batch)
    if case == "negative":
        assert s.num_tokens(1) == 3
