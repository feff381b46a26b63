"""Event hooks: user callables told about each request's life, never able to break it.

Events: ``received``, ``routed``, ``first_token``, ``guard_decision``, ``finished``. A hook gets
one ``HookEvent``; it may be sync or async (an async hook is awaited in place, so keep it quick).
A hook that raises is logged and skipped.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
HOOK_EVENTS = ("received", "routed", "first_token", "guard_decision", "finished")
# a hook may be sync or async: whatever it returns is awaited when awaitable, else ignored
HookFn = Callable[["HookEvent"], object]


@dataclass(frozen=True)
class HookEvent:
    """What happened (``name``), to which request, with event-specific ``data``."""

    name: str
    request_id: str
    data: dict[str, Any] = field(default_factory=dict)


class Hooks:
    """Registered callables per event name."""

    def __init__(self, hooks: Mapping[str, HookFn | Iterable[HookFn]] | None = None) -> None:
        self._hooks: dict[str, list[HookFn]] = {name: [] for name in HOOK_EVENTS}
        for name, fns in (hooks or {}).items():
            for fn in [fns] if callable(fns) else list(fns):
                self.add(name, fn)

    def add(self, event: str, fn: HookFn) -> None:
        """Register ``fn`` for ``event``."""
        if event not in self._hooks:
            raise ValueError(f"unknown hook event {event!r}; known: {', '.join(HOOK_EVENTS)}")
        if not callable(fn):
            raise TypeError(f"hook for {event!r} must be callable, got {type(fn).__name__}")
        self._hooks[event].append(fn)

    def wants(self, event: str) -> bool:
        """True when something listens to ``event`` (lets callers skip building the data)."""
        return bool(self._hooks[event])

    async def emit(self, event: str, request_id: str, **data: Any) -> None:
        """Call every hook of ``event``; log, never raise, whatever a hook does."""
        fns = self._hooks[event]
        if not fns:
            return
        evt = HookEvent(event, request_id, data)
        for fn in fns:
            try:
                result = fn(evt)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("hook %r for event %r raised; ignored", getattr(fn, "__name__", fn), event)
