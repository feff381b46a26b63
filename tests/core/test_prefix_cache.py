"""Prefix caching: hits, isolation by cache salt and LoRA id, seed determinism, what gets indexed."""

from __future__ import annotations

import numpy as np
import pytest

from .core_helpers import make_scheduler, step_and_sample, tokens


def finished_prompt(s, req_id: int, prompt: np.ndarray, **kwargs) -> None:
    """Run `prompt` through prefill and finish it, leaving its full blocks in the cache."""
    s.add_request(req_id, prompt, **kwargs)
    step_and_sample(s, finish=(req_id,))


def test_identical_prompt_hits_and_is_counted_in_tokens() -> None:
    s = make_scheduler(block_size=4)
    finished_prompt(s, 1, tokens(11))
    s.add_request(2, tokens(11))
    out = s.step()
    assert s.num_cached_tokens(2) == 8
    assert out.num_scheduled_tokens.tolist() == [3]
    assert out.positions.tolist() == [8, 9, 10]
    stats = s.stats()
    assert (stats["prefix_cache_hits"], stats["prefix_cache_queries"]) == (8, 22)


def test_hit_never_covers_the_whole_prompt() -> None:
    s = make_scheduler(block_size=4)
    finished_prompt(s, 1, tokens(12))
    s.add_request(2, tokens(12))
    out = s.step()
    assert s.num_cached_tokens(2) == 8  # the third full block is recomputed so 2 can sample
    assert out.num_scheduled_tokens.tolist() == [4]
    assert out.do_sample.tolist() == [1]


def test_partial_last_block_is_not_indexed() -> None:
    s = make_scheduler(num_blocks=8, block_size=4)
    s.add_request(1, tokens(10))
    s.step()
    assert sorted(s.debug_cached_blocks()) == [0, 1]


def test_different_cache_salt_never_shares_blocks() -> None:
    s = make_scheduler(block_size=4)
    finished_prompt(s, 1, tokens(13), cache_salt=111)
    s.add_request(2, tokens(13), cache_salt=222)
    s.add_request(3, tokens(13), cache_salt=111)
    s.step()
    assert s.num_cached_tokens(2) == 0
    assert s.num_cached_tokens(3) == 12


def test_divergent_token_stops_the_hit_at_that_block() -> None:
    s = make_scheduler(block_size=4)
    finished_prompt(s, 1, tokens(16))
    changed = tokens(16)
    changed[5] = 999
    s.add_request(2, changed)
    s.step()
    assert s.num_cached_tokens(2) == 4


def cached_hashes(seed: int) -> list[int]:
    """Hashes of the full blocks of one fixed prompt under `seed`."""
    s = make_scheduler(block_size=4, hash_seed=seed)
    s.add_request(1, tokens(12))
    s.step()
    return sorted(s.debug_cached_blocks().values())


def test_hash_seed_is_deterministic_and_changes_every_hash() -> None:
    assert cached_hashes(3) == cached_hashes(3)
    assert not set(cached_hashes(3)) & set(cached_hashes(4))


def test_generated_tokens_fill_blocks_that_later_prompts_hit() -> None:
    s = make_scheduler(block_size=4)
    s.add_request(1, tokens(6))
    for _ in range(3):
        step_and_sample(s, token=42)  # 6 prompt + 3 sampled; 8 computed -> 2 full blocks
    assert len(s.debug_cached_blocks()) == 2
    s.add_request(2, np.array([*range(6), 42, 42, 42], dtype=np.int32))
    s.step()
    assert s.num_cached_tokens(2) == 8


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_disabled_prefix_caching_never_hits_or_indexes(policy) -> None:
    s = make_scheduler(block_size=4, enable_prefix_caching=False, policy=policy)
    finished_prompt(s, 1, tokens(12))
    s.add_request(2, tokens(12))
    s.step()
    assert s.num_cached_tokens(2) == 0
    assert s.debug_cached_blocks() == {}
    assert s.stats()["prefix_cache_queries"] == 0
