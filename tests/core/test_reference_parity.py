"""The C++ scheduler and the Python reference (tests/helpers/ref_scheduler.py) make identical decisions.

Random traffic goes through both; every step's twelve output arrays must match exactly, block ids
included, so the reference is a faithful oracle and the benchmark compares the same policy.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from ..helpers.ref_scheduler import RefScheduler
from .core_helpers import core

FIELDS = ("req_ids", "num_scheduled_tokens", "input_ids", "positions", "slot_mapping", "cu_seqlens_q", "seq_lens",
          "block_table", "do_sample", "logits_indices", "preempted_ids", "finished_ids")


def random_config(rng: random.Random) -> dict:
    """Tiny random limits that make preemption and prefix hits common."""
    return dict(num_blocks=rng.randint(4, 24), block_size=rng.randint(1, 4), max_num_seqs=rng.randint(1, 6),
                max_num_batched_tokens=rng.randint(1, 24), max_model_len=rng.randint(8, 64),
                enable_prefix_caching=rng.random() < 0.8, policy=rng.choice(["fcfs", "priority"]),
                long_prefill_token_threshold=rng.choice([0, 0, 3, 8]))


def add_to_both(cpp: core.Scheduler, ref: RefScheduler, rng: random.Random, req_id: int) -> None:
    """Add the same random request to both; they must accept or reject it alike."""
    prompt = np.array([rng.randint(0, 3) for _ in range(rng.randint(1, 30))], dtype=np.int32)
    kwargs = dict(priority=rng.randint(0, 3), cache_salt=rng.randint(0, 1))
    outcomes = []
    for sched in (cpp, ref):
        try:
            sched.add_request(req_id, prompt, **kwargs)
            outcomes.append("ok")
        except ValueError:
            outcomes.append("rejected")
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("seed", range(40))
def test_cpp_and_reference_agree_step_by_step(seed) -> None:
    rng = random.Random(seed)
    config = random_config(rng)
    cpp, ref = core.Scheduler(**config), RefScheduler(**config)
    next_id = preemptions = 0
    for _ in range(80):
        action = rng.random()
        if action < 0.3:
            add_to_both(cpp, ref, rng, next_id)
            next_id += 1
        elif action < 0.37 and next_id:
            victim = rng.randrange(next_id)
            assert cpp.abort(victim) == ref.abort(victim)
        else:
            a, b = cpp.step(), ref.step()
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name, strict=True)
            preemptions += len(a.preempted_ids)
            sampling = a.req_ids[a.do_sample == 1].tolist()
            sampled = np.array([rng.randint(0, 3) for _ in sampling], dtype=np.int32)
            finished = np.array([i for i in sampling if rng.random() < 0.2], dtype=np.int64)
            cpp.update(sampled, finished)
            ref.update(sampled, finished)
    assert cpp.stats()["num_preemptions"] == preemptions
