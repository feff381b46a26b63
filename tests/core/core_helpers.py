"""Shared helpers for the C++ core tests (driven through bastion._core)."""

from __future__ import annotations

import numpy as np
import pytest

core = pytest.importorskip("bastion._core")

NO_IDS = np.zeros(0, dtype=np.int64)


def make_scheduler(num_blocks: int = 32, block_size: int = 4, max_num_seqs: int = 8,
                   max_num_batched_tokens: int = 64, max_model_len: int = 128, **kwargs: object) -> core.Scheduler:
    """A small scheduler with overridable limits."""
    return core.Scheduler(num_blocks, block_size, max_num_seqs, max_num_batched_tokens, max_model_len, **kwargs)


def tokens(n: int, start: int = 0) -> np.ndarray:
    """n distinct int32 token ids starting at `start`."""
    return np.arange(start, start + n, dtype=np.int32)


def step_and_sample(sched: core.Scheduler, token: int = 7,
                    finish: tuple[int, ...] = ()) -> tuple[list[int], list[int], list[int], list[int]]:
    """One step, then feed back `token` for every sampling request and finish `finish`.

    Returns (req_ids, num_scheduled_tokens, preempted_ids, finished_ids) copied out of the views.
    """
    out = sched.step()
    result = (out.req_ids.tolist(), out.num_scheduled_tokens.tolist(), out.preempted_ids.tolist(),
              out.finished_ids.tolist())
    sampled = np.full(int(out.do_sample.sum()), token, dtype=np.int32)
    sched.update(sampled, np.array(finish, dtype=np.int64))
    return result
