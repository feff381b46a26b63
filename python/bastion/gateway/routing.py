"""Route order: A/B weighted choice of the primary backend, then the rest as fallbacks in order."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence


class Router:
    """Decides which backend a request tries first and in which order it falls back.

    Without ``weights`` every request tries the backends in their declared order. With
    ``weights`` (name -> non-negative weight, e.g. ``{"v1": 0.9, "v2": 0.1}``) the first backend
    is drawn among the weighted ones; all others follow in declared order as fallbacks.
    """

    def __init__(self, names: Sequence[str], weights: Mapping[str, float] | None = None,
                 rng: random.Random | None = None) -> None:
        if not names:
            raise ValueError("Gateway needs at least one backend")
        self.names = list(names)
        self._rng = rng or random.Random()
        self._weighted: list[str] = []
        self._weights: list[float] = []
        if weights:
            unknown = set(weights) - set(self.names)
            if unknown:
                raise ValueError(f"weights name unknown backend(s) {sorted(unknown)}; known: {self.names}")
            for name, w in weights.items():
                if not isinstance(w, (int, float)) or w < 0 or w != w:
                    raise ValueError(f"weights[{name!r}] must be a number >= 0, got {w!r}")
            self._weighted = [n for n in self.names if weights.get(n, 0) > 0]
            self._weights = [float(weights[n]) for n in self._weighted]
            if not self._weighted:
                raise ValueError("weights: at least one backend needs a weight > 0")

    def order(self) -> list[str]:
        """Backend names for one request: the primary first, then the fallbacks."""
        if not self._weighted:
            return list(self.names)
        first = self._rng.choices(self._weighted, self._weights)[0]
        return [first, *(n for n in self.names if n != first)]
