"""The engine loop on its own thread: commands in, outputs out, deadlines enforced between steps.

The event loop never runs model code. It sends commands (a checked ``EngineCoreRequest`` to add,
an ``AbortCommand``) through a queue and gets each step's outputs back in ONE
``call_soon_threadsafe`` callback. The C++ scheduler step and torch ops release the GIL, so the
event loop keeps running while the model computes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.engine.compute import ComputeBudget
from bastion.engine.engine_core import EngineCore
from bastion.engine.outputs import FinishReason, RequestOutput
from bastion.engine.request import Deadlines, EngineCoreRequest


@dataclass
class AbortCommand:
    """Stop a request; ``reason`` is "abort" (caller) or "timeout"."""

    request_id: str
    reason: FinishReason = "abort"


Deliver = Callable[[list[RequestOutput], list[tuple[str, BaseException]]], None]


class EngineThread:
    """Runs ``EngineCore`` steps on a daemon thread until ``stop()``; with ``compute``, each step
    takes that budget's turn (engines of one process sharing the cores step one at a time)."""

    def __init__(self, core: EngineCore, deliver: Deliver, on_crash: Callable[[BaseException], None],
                 compute: ComputeBudget | None = None) -> None:
        self.core = core
        self._compute = compute
        self._deliver = deliver
        self._on_crash = on_crash
        self._commands: queue.SimpleQueue[EngineCoreRequest | AbortCommand | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._running = True
        self._deadlines: dict[str, Deadlines] = {}
        self._adds_received = 0
        self.snapshot: dict[str, Any] = self._make_snapshot()
        self._thread = threading.Thread(target=self._main, name="bastion-engine", daemon=True)
        self._thread.start()

    def send(self, command: EngineCoreRequest | AbortCommand) -> None:
        """Hand a command to the engine thread (never blocks)."""
        self._commands.put(command)
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to finish and wait for the thread."""
        self._running = False
        self._commands.put(None)
        self._wake.set()
        self._thread.join(timeout)

    def _make_snapshot(self) -> dict[str, Any]:
        stats = self.core.stats()
        waiting = [r for r in self.core.requests.values() if r.metrics.first_scheduled_time is None]
        stats["num_unscheduled"] = len(waiting)
        stats["num_unscheduled_tokens"] = sum(len(r.prompt_token_ids) for r in waiting)
        stats["num_unfinished"] = len(self.core.requests)
        stats["adds_received"] = self._adds_received
        return stats

    def _drain_commands(self, errors: list[tuple[str, BaseException]]) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd is None:
                continue
            if isinstance(cmd, AbortCommand):
                self.core.abort(cmd.request_id, cmd.reason)
                continue
            self._adds_received += 1
            try:
                self.core.add_request(cmd)
            except Exception as exc:  # checked before sending; anything left fails this request only
                errors.append((cmd.request_id, exc))
                continue
            # set or clear: an entry left by an earlier request under the same id (finished or
            # aborted, not yet swept) must not apply to this one
            if cmd.deadlines is not None:
                self._deadlines[cmd.request_id] = cmd.deadlines
            else:
                self._deadlines.pop(cmd.request_id, None)

    def _enforce_deadlines(self) -> None:
        if not self._deadlines:
            return
        now = time.monotonic()
        for rid, limits in list(self._deadlines.items()):
            req = self.core.requests.get(rid)
            if req is None or req.finished:
                del self._deadlines[rid]
                continue
            which = limits.expired(req.metrics, now)
            if which is not None:
                self.core.abort(rid, "timeout", which)
                del self._deadlines[rid]

    def _step(self) -> list[RequestOutput]:
        if self._compute is None:
            return self.core.step()
        with self._compute.turn():
            return self.core.step()

    def _main(self) -> None:
        try:
            while self._running:
                errors: list[tuple[str, BaseException]] = []
                self._drain_commands(errors)
                self._enforce_deadlines()
                outputs = self._step() if self.core.has_unfinished() else []
                self.snapshot = self._make_snapshot()  # published before outputs: callers see freed blocks
                if outputs or errors:
                    self._deliver(outputs, errors)
                if not self.core.has_unfinished():
                    # idle: no request is left, so no deadline can expire; sleep until a command comes
                    # (entries of finished requests are swept by the next _enforce_deadlines)
                    self._wake.wait()
                    self._wake.clear()
        except BaseException as exc:  # the loop itself broke: every stream must learn it
            self._on_crash(exc)
