"""The step protocol: a named unit of work that reads named values and produces one JSON output."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from bastion.pipeline.policy import StepPolicy

if TYPE_CHECKING:
    from bastion.pipeline.context import RunContext

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class StepOutput:
    """What one attempt of a step produced: its output and, for model steps, the calls' facts."""

    output: Any
    prompt_tokens: int = 0
    output_tokens: int = 0
    backend: str | None = None
    audit_ids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Step(ABC):
    """A step of a pipeline. ``name`` is how templates, edges and the run's result refer to it."""

    kind: ClassVar[str]

    def __init__(self, name: str, policy: StepPolicy | None = None) -> None:
        """``name``: an identifier (letters, digits, underscores); ``policy``: retries, timeout, fallback."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"step name must be an identifier, got {name!r}")
        self.name = name
        self.policy = policy or StepPolicy()

    @property
    @abstractmethod
    def inputs(self) -> tuple[str, ...]:
        """Names of the run inputs and step outputs this step reads."""

    @abstractmethod
    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """JSON description of everything that determines the output besides the inputs (the cache key)."""

    @abstractmethod
    async def run(self, ctx: RunContext, values: Mapping[str, Any], backend: str | None = None) -> StepOutput:
        """One attempt. ``values``: run inputs and earlier outputs; ``backend`` overrides a model step's
        backend (its fallback), other steps ignore it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
