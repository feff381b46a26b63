"""Per-user and per-tenant request and token rate limits: token buckets with reserve-then-settle.

At admission a request reserves 1 request plus ``prompt_tokens + max_tokens`` tokens in every bucket
that applies to it, atomically: either all buckets are debited or none is, and the refusal says exactly
when the same request would fit (``RateLimited.retry_after``). When the request finishes,
:meth:`Reservation.settle` refunds the tokens it did not use (or charges the overshoot), so limits are
enforced *before* the model runs instead of one request late, as gateways charging after the response
do. Each bucket holds one minute's worth and refills continuously. A bucket that has refilled to full is
indistinguishable from a new one, so idle full buckets are dropped: memory grows with the keys active in
the last minute, not with every key ever seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bastion.errors import BastionError, RateLimited

Scope = Literal["user", "tenant"]
Dimension = Literal["requests", "tokens"]
# Requests without a user or tenant id share this key, so leaving the id out never bypasses a limit.
ANONYMOUS = "<anonymous>"
_MIN_SWEEP_SIZE = 1024


@dataclass(frozen=True)
class RateLimit:
    """A limit of ``requests_per_minute`` and/or ``tokens_per_minute`` for each user or each tenant."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    scope: Scope = "user"

    def __post_init__(self) -> None:
        if self.scope not in ("user", "tenant"):
            raise ValueError(f"scope: must be 'user' or 'tenant', got {self.scope!r}")
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("requests_per_minute: set it or tokens_per_minute (a limit needs at least one)")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: must be > 0, got {value}")

    def per_minute(self, dimension: Dimension) -> float | None:
        """The limit for ``dimension`` (None when this limit does not cover it)."""
        return self.requests_per_minute if dimension == "requests" else self.tokens_per_minute


class ReservationTooLarge(BastionError, ValueError):
    """The request needs more than a bucket can ever hold: it would wait forever, so it is refused."""


@dataclass(frozen=True)
class _BucketKey:
    limit_index: int
    scope: Scope
    key: str
    dimension: Dimension


class _Bucket:
    """Level of one token bucket at the instant ``updated_at`` (may be negative after an overshoot)."""

    __slots__ = ("capacity", "rate", "level", "updated_at")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0  # units per second
        self.level = capacity
        self.updated_at = now

    def refill(self, now: float) -> float:
        """Bring the level up to ``now`` (never above capacity) and return it."""
        if now > self.updated_at:
            self.level = min(self.capacity, self.level + (now - self.updated_at) * self.rate)
            self.updated_at = now
        return self.level


class Reservation:
    """What one admitted request holds; call :meth:`settle` once it finishes (or is aborted)."""

    def __init__(self, limiter: RateLimiter, token_keys: list[_BucketKey], tokens: int) -> None:
        """Internal: created by :meth:`RateLimiter.reserve`."""
        self._limiter = limiter
        self._token_keys = token_keys
        self.tokens = tokens
        self.settled = False

    def settle(self, actual_tokens: int) -> None:
        """Refund ``tokens - actual_tokens`` (or charge the overshoot) to every token bucket; once only.

        The request itself is never refunded: it was made. Later calls are ignored.
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens: must be >= 0, got {actual_tokens}")
        self._limiter._settle(self, actual_tokens)


class RateLimiter:
    """Token buckets per (limit, scope, key, dimension); thread-safe."""

    def __init__(self, limits: Sequence[RateLimit], clock: Callable[[], float] = time.monotonic) -> None:
        """Enforce every limit in ``limits``; ``clock`` is monotonic seconds (inject a fake one in tests)."""
        self.limits = tuple(limits)
        for index, limit in enumerate(self.limits):
            if not isinstance(limit, RateLimit):
                raise ValueError(f"limits[{index}]: expected a RateLimit, got {type(limit).__name__}")
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[_BucketKey, _Bucket] = {}
        self._sweep_at = _MIN_SWEEP_SIZE

    def reserve(self, user: str | None, tenant: str | None, tokens: int) -> Reservation:
        """Reserve 1 request and ``tokens`` tokens in every applicable bucket, or none of them.

        Raises :class:`~bastion.errors.RateLimited` (``retry_after`` = seconds until every bucket has
        refilled enough, assuming no other traffic) or :class:`ReservationTooLarge` when a bucket's whole
        capacity is smaller than the request.
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens: must be an int >= 0, got {tokens!r}")
        ids = {"user": user or ANONYMOUS, "tenant": tenant or ANONYMOUS}
        wanted: list[tuple[_BucketKey, float, float]] = []  # key, amount, capacity
        demand: tuple[tuple[Dimension, float], ...] = (("requests", 1), ("tokens", tokens))
        for index, limit in enumerate(self.limits):
            for dimension, amount in demand:
                capacity = limit.per_minute(dimension)
                if capacity is not None:
                    wanted.append((_BucketKey(index, limit.scope, ids[limit.scope], dimension), amount, capacity))
        for key, amount, capacity in wanted:
            if amount > capacity:
                raise ReservationTooLarge(
                    f"request needs {amount} {key.dimension} but the {key.scope} {key.key!r} limit allows at most "
                    f"{capacity:g} {key.dimension} per minute")
        with self._lock:
            now = self._clock()
            buckets = [self._bucket(key, capacity, now) for key, _, capacity in wanted]
            waits = [(amount - bucket.refill(now)) / bucket.rate for (_, amount, _), bucket in zip(wanted, buckets)]
            slowest = max(range(len(waits)), key=waits.__getitem__, default=None)
            if slowest is not None and waits[slowest] > 0:
                key, _, capacity = wanted[slowest]
                raise RateLimited(
                    f"rate limit exceeded for {key.scope} {key.key!r}: {capacity:g} {key.dimension} per minute",
                    retry_after=waits[slowest])
            for (_, amount, _), bucket in zip(wanted, buckets):
                bucket.level -= amount
            self._maybe_sweep(now)
        return Reservation(self, [key for key, _, _ in wanted if key.dimension == "tokens"], tokens)

    def sweep(self) -> int:
        """Drop every bucket that has refilled to full; returns how many remain."""
        with self._lock:
            self._sweep(self._clock())
            return len(self._buckets)

    @property
    def bucket_count(self) -> int:
        """Number of buckets held in memory right now."""
        with self._lock:
            return len(self._buckets)

    def _settle(self, reservation: Reservation, actual_tokens: int) -> None:
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            unused = reservation.tokens - actual_tokens
            now = self._clock()
            for key in reservation._token_keys:
                capacity = self.limits[key.limit_index].per_minute("tokens")
                assert capacity is not None  # token keys exist only for limits with a token rate
                bucket = self._bucket(key, capacity, now)
                bucket.refill(now)
                # A refund cannot overfill; an overshoot may drive the level negative (a debt to wait out).
                bucket.level = min(bucket.capacity, bucket.level + unused)

    def _bucket(self, key: _BucketKey, capacity: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        return bucket

    def _maybe_sweep(self, now: float) -> None:
        # Amortized O(1): sweep only when the table has doubled since the last sweep.
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
            self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._buckets))

    def _sweep(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.refill(now) >= bucket.capacity]
        for key in full:
            del self._buckets[key]
