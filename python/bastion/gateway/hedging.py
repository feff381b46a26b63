"""Hedged requests: when the first token is late, race a second backend and keep the first to answer.

Polly's hedging strategy (``MaxHedgedAttempts``, ``Delay``), made budget-aware: a hedge is only
started on a backend whose health says it has room (KV usage and queue time under the policy's
bounds), so a hedge never pushes a loaded engine into preemptions. Hedging happens only before the
client has received anything, so two streams are never mixed. The first attempt to release a
token (or finish) wins; every other one is cancelled at once, which closes its stream and aborts
its request (a local engine frees the request's KV blocks), and the Gateway records it as a
``hedge_lost`` attempt in the audit trail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.gateway.attempt import Released
from bastion.gateway.guarding import OutputGate
from bastion.gateway.types import BackendHealth

if TYPE_CHECKING:
    from bastion.resilience.breaker import Permit


@dataclass(frozen=True)
class HedgePolicy:
    """When and where the Gateway may start a hedge attempt.

    ``delay_s``: start a hedge when an attempt has released no token this long after it started
    (None = hedging off, the default). ``max_hedges``: hedges per request at most. A target backend
    is skipped when its ``health()`` reports ``kv_usage`` above ``max_kv_usage`` or a queue time
    above ``max_queue_time_s`` (None = no bound); a backend without health reports is eligible.
    """

    delay_s: float | None = None
    max_hedges: int = 1
    max_kv_usage: float = 0.9
    max_queue_time_s: float | None = 1.0

    def __post_init__(self) -> None:
        if self.delay_s is not None and not self.delay_s > 0:
            raise ValueError(f"hedge_policy.delay_s must be > 0 seconds or None, got {self.delay_s!r}")
        if isinstance(self.max_hedges, bool) or not isinstance(self.max_hedges, int) or self.max_hedges < 0:
            raise ValueError(f"hedge_policy.max_hedges must be an integer >= 0, got {self.max_hedges!r}")
        if not 0 <= self.max_kv_usage <= 1:
            raise ValueError(f"hedge_policy.max_kv_usage must be in [0, 1], got {self.max_kv_usage!r}")
        if self.max_queue_time_s is not None and self.max_queue_time_s < 0:
            raise ValueError(f"hedge_policy.max_queue_time_s must be >= 0 or None, got {self.max_queue_time_s!r}")

    @property
    def enabled(self) -> bool:
        """True when this policy ever starts a hedge."""
        return self.delay_s is not None and self.max_hedges > 0

    def has_budget(self, health: BackendHealth | None) -> bool:
        """Whether a backend reporting ``health`` may take a hedge (no report: yes)."""
        if health is None:
            return True
        if health.kv_usage > self.max_kv_usage:
            return False
        return self.max_queue_time_s is None or health.queue_time_s <= self.max_queue_time_s


@dataclass
class Leg:
    """One attempt taking part in a race: its backend, breaker permit, output gate and stream."""

    name: str
    permit: Permit
    breaker_state: str
    started: float
    gate: OutputGate
    attempt: AsyncGenerator[Released, None]
    hedge: bool = False  # started as a hedge (not the attempt the route chose)
    task: asyncio.Task | None = None  # the pending wait for this leg's first release


# Failover callbacks: start a hedge (None when no backend may take one), and settle a leg that
# left the race: ("hedge_lost" | "aborted", None) or ("failed", the exception it raised).
OpenHedge = Callable[[set[str]], Awaitable[Leg | None]]
SettleLeg = Callable[[Leg, str, BaseException | None], Awaitable[None]]


class HedgeRace:
    """Stream one attempt, hedging it per ``policy`` until some leg releases its first token.

    ``leg`` is the attempt the caller is streaming from: the primary until a hedge wins, or the
    last leg standing. An exception of that leg propagates out of ``stream`` (the caller settles
    it like any attempt); legs that fail while another one is still racing are settled through
    ``settle`` and the race goes on without them (no double fallback).
    """

    def __init__(self, primary: Leg, policy: HedgePolicy, hedges_left: int, open_hedge: OpenHedge,
                 settle: SettleLeg) -> None:
        self.leg = primary
        self.policy = policy
        self.hedges_left = hedges_left if policy.enabled else 0
        self.hedges_started = 0
        self._open_hedge = open_hedge
        self._settle = settle
        self._racing: list[Leg] = [primary]

    async def stream(self) -> AsyncGenerator[Released, None]:
        """Yield the winning leg's releases; the last one has ``final``."""
        try:
            if self.hedges_left > 0:
                first = await self._race()
                yield first
                if first.final is not None:
                    return
            async for released in self.leg.attempt:
                yield released
        finally:
            await self._close_all()

    async def _race(self) -> Released:
        """The first release of any leg; the winner becomes ``self.leg``, the others are cancelled."""
        loop = asyncio.get_running_loop()
        assert self.policy.delay_s is not None
        next_hedge_at = loop.time() + self.policy.delay_s
        self.leg.task = asyncio.ensure_future(anext(self.leg.attempt))
        while True:
            can_hedge = self.hedges_left > 0
            timeout = max(0.0, next_hedge_at - loop.time()) if can_hedge else None
            done, _ = await asyncio.wait([leg.task for leg in self._racing if leg.task is not None],
                                         timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                await self._start_hedge()
                next_hedge_at = loop.time() + self.policy.delay_s
                continue
            # in route order, so a tie goes to the primary
            for leg in [leg for leg in self._racing if leg.task in done]:
                task = leg.task
                assert task is not None  # it is in done
                exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                if exc is None:
                    self.leg = leg
                    await self._cancel_losers(leg)
                    return task.result()
                if len(self._racing) == 1:  # the last one standing: its error is the attempt's error
                    self.leg = leg
                    self._racing = []
                    await _close(leg)
                    raise exc
                self._racing.remove(leg)
                await _close(leg)
                await self._settle(leg, "failed", exc)
                if self.leg is leg:
                    self.leg = self._racing[0]

    async def _start_hedge(self) -> None:
        """Start one hedge now; when no backend may take one, stop hedging for this race."""
        leg = await self._open_hedge({leg.name for leg in self._racing})
        if leg is None:
            self.hedges_left = 0
            return
        self.hedges_left -= 1
        self.hedges_started += 1
        leg.task = asyncio.ensure_future(anext(leg.attempt))
        self._racing.append(leg)

    async def _cancel_losers(self, winner: Leg) -> None:
        losers = [leg for leg in self._racing if leg is not winner]
        self._racing = [winner]
        winner.task = None
        for leg in losers:
            await _close(leg)
            await self._settle(leg, "hedge_lost", None)

    async def _close_all(self) -> None:
        """Close every stream still open; legs other than ``leg`` that were still racing are abandoned."""
        racing, self._racing = self._racing, []
        for leg in racing:
            await _close(leg)
            if leg is not self.leg:
                await self._settle(leg, "aborted", None)
        if self.leg not in racing:
            await _close(self.leg)


async def _close(leg: Leg) -> None:
    """Cancel the leg's pending wait and close its stream: the backend request is aborted now."""
    task, leg.task = leg.task, None
    if task is not None:
        if not task.done():
            task.cancel()
        # wait for the cancellation to run the stream's cleanup (abort, KV blocks freed)
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: a loser's error is expected, not worth a warning
    await leg.attempt.aclose()
