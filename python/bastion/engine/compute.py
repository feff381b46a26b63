"""``ComputeBudget``: the CPU threads that several engines in one process share.

Each engine step runs OpenMP kernels over all of the process's kernel threads. Two engines stepping
at once (a classifier and a generator, say) would start two thread teams on the same cores: each
team's threads spin at its barriers while the other team holds the cores, and both slow down far
more than the halved share suggests. Engines that share a budget take turns instead: a step holds
the budget's turn, and turns are handed out first come, first served, so a busy generator cannot
starve a classifier that waits for one short step.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class ComputeBudget:
    """A first-come-first-served turn for engine steps, shared by the engines of one process.

    ``threads``: the kernel threads every step uses (None: the engines' own setting). ``turns``,
    ``waits`` and ``max_holders`` are counters for tests and ``stats()``.
    """

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads: must be >= 1 or None, got {threads}")
        self.threads = threads
        self._lock = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._busy = False
        self._holders = 0
        self.turns = 0
        self.waits = 0
        self.max_holders = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the cores for one step: waits, in arrival order, until no other engine steps."""
        with self._lock:
            if self._busy:
                ticket = threading.Event()
                self._queue.append(ticket)
                self.waits += 1
            else:
                ticket = None
                self._busy = True
        if ticket is not None:
            ticket.wait()  # the releasing holder hands the turn straight to us (busy stays set)
        self._holders += 1
        self.max_holders = max(self.max_holders, self._holders)
        self.turns += 1
        try:
            yield
        finally:
            self._holders -= 1
            with self._lock:
                if self._queue:
                    self._queue.popleft().set()
                else:
                    self._busy = False

    def stats(self) -> dict[str, int]:
        """Turns taken, turns that had to wait, and the most engines ever stepping at once (1)."""
        return {"turns": self.turns, "waits": self.waits, "max_holders": self.max_holders}
