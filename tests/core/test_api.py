"""The Python-visible contract: validation errors, update semantics, zero-copy views, stats, threads."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from .core_helpers import NO_IDS, core, make_scheduler, step_and_sample, tokens


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_blocks": 0}, "num_blocks"), ({"block_size": -1}, "block_size"), ({"max_num_seqs": 0}, "max_num_seqs"),
     ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"), ({"max_model_len": 0}, "max_model_len"),
     ({"policy": "lifo"}, "policy"), ({"long_prefill_token_threshold": -2}, "long_prefill_token_threshold"),
     ({"num_blocks": 2**40}, "num_blocks"), ({"hash_seed": -1}, "hash_seed"), ({"hash_seed": 2**64}, "hash_seed")],
)
def test_bad_config_names_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        make_scheduler(**kwargs)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [(np.zeros(0, dtype=np.int32), "empty"), (tokens(200), "can never fit"),
     (np.array([1, -3], dtype=np.int32), "negative"), (np.zeros((2, 2), dtype=np.int32), "1-D")],
)
def test_bad_prompt_is_rejected_with_the_reason(prompt, message) -> None:
    s = make_scheduler(max_model_len=128)
    with pytest.raises(ValueError, match=message):
        s.add_request(1, prompt)
    assert s.stats()["num_waiting"] == 0


def test_prompt_larger_than_the_pool_is_rejected_at_add() -> None:
    s = make_scheduler(num_blocks=4, block_size=4, max_model_len=1000)
    with pytest.raises(ValueError, match="4 blocks x 4"):
        s.add_request(1, tokens(17))
    s.add_request(2, tokens(16))  # exactly the pool: accepted


def test_duplicate_id_is_rejected_until_the_finished_one_is_reported() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    with pytest.raises(ValueError, match="already in use"):
        s.add_request(1, tokens(3))
    step_and_sample(s, finish=(1,))
    with pytest.raises(ValueError, match="reuse it after the next step"):
        s.add_request(1, tokens(3))
    step_and_sample(s)
    s.add_request(1, tokens(3))


def test_update_validates_before_changing_anything() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    s.step()
    with pytest.raises(ValueError, match="do_sample"):
        s.update(np.zeros(2, dtype=np.int32), NO_IDS)
    with pytest.raises(ValueError, match="unknown request id 5"):
        s.update(np.zeros(1, dtype=np.int32), np.array([5]))
    with pytest.raises(ValueError, match="not a valid token id"):
        s.update(np.array([-1], dtype=np.int32), NO_IDS)
    assert s.num_tokens(1) == 3
    s.update(np.array([11], dtype=np.int32), NO_IDS)
    assert s.num_tokens(1) == 4
    assert s.step().input_ids.tolist() == [11]


def test_step_before_update_of_sampled_tokens_is_an_error() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(3))
    s.step()
    with pytest.raises(RuntimeError, match="update"):
        s.step()


def test_per_request_queries_reject_unknown_ids() -> None:
    s = make_scheduler()
    with pytest.raises(ValueError, match="unknown request id 9"):
        s.num_cached_tokens(9)
    with pytest.raises(ValueError, match="unknown request id 9"):
        s.num_preemptions(9)


def test_step_output_dtypes_and_shapes_follow_the_contract() -> None:
    s = make_scheduler(max_model_len=64, block_size=4)
    s.add_request(1, tokens(5))
    s.add_request(2, tokens(2, start=9))
    out = s.step()
    expected = {"req_ids": (np.int64, (2,)), "num_scheduled_tokens": (np.int32, (2,)),
                "input_ids": (np.int32, (7,)), "positions": (np.int64, (7,)), "slot_mapping": (np.int64, (7,)),
                "cu_seqlens_q": (np.int32, (3,)), "seq_lens": (np.int32, (2,)), "block_table": (np.int32, (2, 16)),
                "do_sample": (np.uint8, (2,)), "logits_indices": (np.int64, (2,)),
                "preempted_ids": (np.int64, (0,)), "finished_ids": (np.int64, (0,))}
    for name, (dtype, shape) in expected.items():
        arr = getattr(out, name)
        assert (arr.dtype, arr.shape) == (np.dtype(dtype), shape), name
    assert out.logits_indices.tolist() == [4, 6]
    assert (out.num_reqs, out.num_tokens) == (2, 7)


def test_step_arrays_are_views_that_keep_the_scheduler_alive() -> None:
    s = make_scheduler()
    s.add_request(1, tokens(4))
    first = s.step()
    s.update(np.array([1], dtype=np.int32), NO_IDS)
    second = s.step()
    assert np.shares_memory(first.input_ids, second.input_ids)  # same buffer, no copy per step
    del s
    gc.collect()
    assert second.input_ids.tolist() == [1]  # the base object still owns the buffer


def test_stats_report_pool_queues_and_usage() -> None:
    s = make_scheduler(num_blocks=10, block_size=4, max_num_seqs=1)
    s.add_request(1, tokens(9))
    s.add_request(2, tokens(3))
    s.step()
    assert s.stats() == {"num_total_blocks": 10, "num_free_blocks": 7, "num_used_blocks": 3, "num_running": 1,
                         "num_waiting": 1, "prefix_cache_hits": 0, "prefix_cache_queries": 9,
                         "num_preemptions": 0, "kv_cache_usage": pytest.approx(0.3)}


def test_adding_from_another_thread_while_stepping_keeps_state_consistent() -> None:
    s = make_scheduler(num_blocks=64, max_num_seqs=16, max_num_batched_tokens=32)
    done = threading.Event()

    def producer() -> None:
        for i in range(300):
            s.add_request(1000 + i, tokens(1 + i % 9, start=i))
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    # bounded by work, not wall time: a slow producer thread (busy CI) only means more steps
    for step in range(50_000):
        out = s.step()
        finish = out.req_ids[out.do_sample == 1][::3]
        s.update(np.full(int(out.do_sample.sum()), step % 50, dtype=np.int32), finish)
        if done.is_set() and s.stats()["num_running"] + s.stats()["num_waiting"] == 0:
            break
    thread.join()
    s.check_invariants()
    assert done.is_set() and s.stats()["num_running"] + s.stats()["num_waiting"] == 0
    assert s.stats()["num_used_blocks"] == 0


def test_module_exposes_the_contract_names() -> None:
    assert {"Scheduler", "StepOutput"} <= set(dir(core))
    assert core.Scheduler.step.__doc__
