"""Shadow traffic: a copy of each request goes to another backend and its answer is thrown away.

The copy runs as a fire-and-forget task: it never delays, changes or fails the real answer. Its
outcomes are only counted (``stats``) and logged, for comparing a candidate model under real load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from bastion.gateway.backend import Backend
from bastion.gateway.types import BackendRequest

log = logging.getLogger(__name__)


class ShadowRunner:
    """Runs shadow copies of requests on ``backend``; ``stats`` counts ok / error outcomes."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()

    def start(self, request: BackendRequest) -> None:
        """Launch the shadow copy of ``request`` and return at once."""
        task = asyncio.get_running_loop().create_task(self._run(request), name=f"shadow:{request.request_id}")
        self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: BackendRequest) -> None:
        tokens = 0
        try:
            async for chunk in self.backend.stream(request):
                tokens += chunk.num_tokens
            self.stats["ok"] += 1
            self.stats["tokens"] += tokens
        except asyncio.CancelledError:
            self.stats["cancelled"] += 1
            raise
        except Exception as e:
            self.stats["error"] += 1
            log.info("shadow request %s failed (ignored): %r", request.request_id, e)

    async def wait(self) -> None:
        """Wait for the shadow copies in flight (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the shadow copies in flight."""
        for task in list(self._tasks):
            task.cancel()
        await self.wait()
