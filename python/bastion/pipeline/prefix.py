"""Prefix sharing between concurrent model calls on a local engine.

The engine's prefix cache reuses only blocks already computed: branches of a fork that reach the engine
together each compute their shared prompt prefix again (SmolLM2, four 690-token prompts started at once:
688 cached tokens in all, 14.6 s; one after the other: 2064, 5.0 s). So a call whose prompt shares at least
``min_tokens`` leading tokens with a call still in prefill waits for that leader's first token, then runs:
the prefix is computed once and every follower hits it (SGLang's fork does the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class _Leader:
    backend: str
    token_ids: list[int]
    prefilled: asyncio.Event = field(default_factory=asyncio.Event)


def shared_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixSharing:
    """Per run: orders concurrent calls on one backend so that a shared prefix is prefilled once."""

    def __init__(self, min_tokens: int | None = 32) -> None:
        """``min_tokens``: the shortest shared prefix worth waiting for (two KV blocks of 16 by default);
        None: never wait (every call starts at once)."""
        self.min_tokens = min_tokens
        self._leaders: list[_Leader] = []

    async def enter(self, backend: str, token_ids: list[int]) -> _Leader | None:
        """Wait for a leader in prefill that shares a prefix with ``token_ids``; else become one.

        Returns the new leader (the caller calls ``done`` on it at its first token or its end), or None
        when the call followed a leader.
        """
        if self.min_tokens is None:
            return None
        for leader in self._leaders:
            if leader.backend == backend and not leader.prefilled.is_set() \
                    and shared_prefix_len(leader.token_ids, token_ids) >= self.min_tokens:
                await leader.prefilled.wait()
                return None
        leader = _Leader(backend, token_ids)
        self._leaders.append(leader)
        return leader

    def done(self, leader: _Leader | None) -> None:
        """The leader's prefill is over (first token, or the call ended): release its followers."""
        if leader is not None and not leader.prefilled.is_set():
            leader.prefilled.set()
            self._leaders.remove(leader)
