"""A breaker permit (one admitted call) and the ``with`` / ``async with`` guard that settles it."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal, Protocol

PermitOutcome = Literal["success", "error", "release"]


class _PermitSink(Protocol):
    """What a permit reports to: the breaker that issued it."""

    def _complete(self, permit: Permit, outcome: PermitOutcome, duration_s: float,
                  exc: BaseException | None) -> None: ...


class Permit:
    """The right to make one call through a breaker; report exactly one outcome.

    All three methods are idempotent: the first report wins and later ones are ignored, so a caller may
    report explicitly inside :meth:`CircuitBreaker.guard` without being counted twice. A permit issued
    in an earlier state (before a transition) is dropped on report, so slow calls admitted while CLOSED
    cannot decide a later HALF_OPEN probe window.
    """

    __slots__ = ("_sink", "epoch", "started_at", "settled")

    def __init__(self, sink: _PermitSink, epoch: int, started_at: float) -> None:
        """Internal: permits are created by :meth:`CircuitBreaker.try_acquire`."""
        self._sink = sink
        self.epoch = epoch
        self.started_at = started_at
        self.settled = False  # written under the breaker's lock

    def on_success(self, duration_s: float) -> None:
        """The call succeeded after ``duration_s`` seconds (slow if above the slow-call threshold)."""
        self._sink._complete(self, "success", duration_s, None)

    def on_error(self, duration_s: float, exc: BaseException) -> None:
        """The call failed with ``exc`` after ``duration_s`` seconds; the config's predicates classify it."""
        self._sink._complete(self, "error", duration_s, exc)

    def release(self) -> None:
        """The call was cancelled: free a half-open probe slot without counting any outcome."""
        self._sink._complete(self, "release", 0.0, None)


class BreakerGuard:
    """Context manager (sync and async) around one call: acquires a permit and reports the outcome.

    A normal exit is a success, an ``Exception`` is an error, and any other ``BaseException``
    (``asyncio.CancelledError``, ``KeyboardInterrupt``, ``GeneratorExit``) releases the permit, so a
    cancelled task never leaks a half-open probe slot (Resilience4j issues #903/#935).
    """

    def __init__(self, acquire: Callable[[], Permit], clock: Callable[[], float]) -> None:
        """Internal: built by :meth:`CircuitBreaker.guard`."""
        self._acquire = acquire
        self._clock = clock
        self._permit: Permit | None = None

    def __enter__(self) -> Permit:
        """Acquire a permit; raises ``CallNotPermitted`` when the breaker refuses."""
        self._permit = self._acquire()
        return self._permit

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Report the outcome of the block; never swallows the exception."""
        permit = self._permit
        if permit is None:
            return
        duration = self._clock() - permit.started_at
        if exc is None:
            permit.on_success(duration)
        elif isinstance(exc, Exception):
            permit.on_error(duration, exc)
        else:
            permit.release()

    async def __aenter__(self) -> Permit:
        """Async form of :meth:`__enter__` (acquiring never blocks)."""
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Async form of :meth:`__exit__`."""
        self.__exit__(exc_type, exc, tb)
