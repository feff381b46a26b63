"""Edges between steps: sequence, conditions on the source's output, fork and join."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Condition = str | tuple[str, ...] | Callable[[Any], bool] | None


def label_of(output: Any) -> Any:
    """What a condition compares: the output itself, or its ``"label"`` key for a dict output."""
    if isinstance(output, Mapping) and "label" in output:
        return output["label"]
    return output


@dataclass(frozen=True)
class Edge:
    """``source`` -> ``target``, active when ``when`` holds for the source's output: None (always), a label
    or a tuple of labels (compared with the output's label, stripped), or a predicate on the output."""

    source: str
    target: str
    when: Condition = None

    def active(self, output: Any) -> bool:
        """Whether the edge carries the run from its source (which produced ``output``) to its target."""
        if self.when is None:
            return True
        if callable(self.when):
            return bool(self.when(output))
        labels = (self.when,) if isinstance(self.when, str) else self.when
        label = label_of(output)
        return isinstance(label, str) and label.strip() in labels


def sequence(*names: str) -> list[Edge]:
    """Edges a -> b -> c ..."""
    return [Edge(a, b) for a, b in zip(names, names[1:], strict=False)]


def fork(source: str, targets: Iterable[str]) -> list[Edge]:
    """Edges from ``source`` to every target: the targets run in parallel."""
    return [Edge(source, t) for t in targets]


def join(sources: Iterable[str], target: str) -> list[Edge]:
    """Edges from every source to ``target``: it waits for all of them."""
    return [Edge(s, target) for s in sources]


def route(source: str, targets: Mapping[str, str]) -> list[Edge]:
    """Label -> target: the target whose label the source's output carries runs, the others are skipped."""
    return [Edge(source, target, label) for label, target in targets.items()]
