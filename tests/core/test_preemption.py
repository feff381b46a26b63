"""Preemption by recompute: victim order under fcfs and priority, requeue at the head, abort, finish."""

from __future__ import annotations

import numpy as np

from .core_helpers import core, make_scheduler, step_and_sample, tokens


def three_running(policy: str, priorities: tuple[int, int, int]) -> core.Scheduler:
    """Requests 1, 2, 3 of 4 tokens each filling 6 of 7 blocks (block_size 2), one token sampled."""
    s = make_scheduler(num_blocks=7, block_size=2, policy=policy, enable_prefix_caching=False)
    for req_id, prio in zip((1, 2, 3), priorities, strict=True):
        s.add_request(req_id, tokens(4, start=10 * req_id), priority=prio)
    step_and_sample(s)
    return s


def test_fcfs_preempts_the_newest_and_requeues_it_at_the_head() -> None:
    s = three_running("fcfs", (0, 0, 0))
    s.add_request(4, tokens(1, start=90))
    ids, counts, preempted, _ = step_and_sample(s)
    assert (ids, counts, preempted) == ([1, 2], [1, 1], [3])
    assert s.debug_waiting_ids() == [3, 4]
    # Request 4 would fit in the block left over, but no admission happens in a preempting step.
    assert s.stats()["num_free_blocks"] == 1
    assert s.num_preemptions(3) == 1 and s.stats()["num_preemptions"] == 1
    assert s.num_computed_tokens(3) == 0


def test_preempted_request_recomputes_prompt_and_generated_tokens() -> None:
    s = three_running("fcfs", (0, 0, 0))
    step_and_sample(s, finish=(1, 2))
    ids, counts, _, finished = step_and_sample(s)
    assert finished == [1, 2]
    assert (ids, counts) == ([3], [5])  # 4 prompt tokens + the 1 it had generated
    assert s.num_tokens(3) == 6


def test_priority_preempts_the_worst_priority_even_if_already_scheduled() -> None:
    s = make_scheduler(num_blocks=7, block_size=2, policy="priority", enable_prefix_caching=False)
    s.add_request(1, tokens(4), priority=5)
    step_and_sample(s)
    s.add_request(2, tokens(4, start=20), priority=0)
    s.add_request(3, tokens(4, start=30), priority=1)
    step_and_sample(s)  # pool now full; running order is [1, 2, 3]
    ids, counts, preempted, _ = step_and_sample(s)
    # 1 fits its decode token in a held block and is scheduled first; 2 then needs a block, so
    # the worst priority (1) is preempted and its token goes back into the budget.
    assert preempted == [1]
    assert (ids, counts) == ([2, 3], [1, 1])


def test_priority_victim_can_be_the_request_itself() -> None:
    s = make_scheduler(num_blocks=4, block_size=2, policy="priority", enable_prefix_caching=False)
    s.add_request(1, tokens(3), priority=0)
    s.add_request(2, tokens(4, start=20), priority=5)
    step_and_sample(s)
    ids, _, preempted, _ = step_and_sample(s)
    assert (ids, preempted) == ([1], [2])
    assert s.debug_waiting_ids() == [2]


def test_priority_waiting_queue_orders_by_priority_then_arrival() -> None:
    s = make_scheduler(max_num_seqs=1, policy="priority")
    for req_id, prio in ((1, 3), (2, 1), (3, 3), (4, 0), (5, 1)):
        s.add_request(req_id, tokens(2), priority=prio)
    assert s.debug_waiting_ids() == [4, 2, 5, 1, 3]


def test_priority_preempted_request_is_requeued_in_priority_order() -> None:
    s = three_running("priority", (0, 1, 5))
    s.add_request(8, tokens(2, start=80), priority=9)
    s.add_request(9, tokens(2, start=90), priority=0)
    assert step_and_sample(s)[2] == [3]
    assert s.debug_waiting_ids() == [9, 3, 8]


def test_abort_of_running_and_waiting_requests() -> None:
    s = make_scheduler(max_num_seqs=1)
    s.add_request(1, tokens(5))
    s.add_request(2, tokens(5))
    step_and_sample(s)
    assert s.abort(1) and s.abort(2)
    assert not s.abort(1)
    assert not s.abort(77)
    stats = s.stats()
    assert (stats["num_running"], stats["num_waiting"], stats["num_used_blocks"]) == (0, 0, 0)
    *_, finished = step_and_sample(s)
    assert finished == [1, 2]


def test_abort_between_step_and_update_skips_the_sample() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    s.add_request(2, tokens(3, start=20))
    out = s.step()
    assert out.do_sample.tolist() == [1, 1]
    assert s.abort(1)
    s.update(np.full(2, 9, dtype=np.int32), [])  # plain lists are accepted too
    assert s.num_tokens(1) == 3 and s.num_tokens(2) == 4


def test_finish_frees_blocks_and_is_reported_once() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(5))
    step_and_sample(s, finish=(1,))
    assert s.stats()["num_used_blocks"] == 0
    assert not s.abort(1)
    assert step_and_sample(s)[3] == [1]
    assert step_and_sample(s)[3] == []
