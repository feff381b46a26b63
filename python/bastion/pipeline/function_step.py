"""A Python function (sync or async) as a step: its parameters name the values it reads."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.pipeline.policy import StepPolicy
from bastion.pipeline.step import Step, StepOutput

if TYPE_CHECKING:
    from bastion.pipeline.context import RunContext


class FunctionStep(Step):
    """Call ``fn`` with keyword arguments named after its parameters, taken from the run's inputs and
    earlier outputs; a parameter with a default may be missing (a skipped branch). A sync function runs on
    a worker thread so it never blocks the event loop; its return value (JSON) is the step's output.
    """

    kind = "function"

    def __init__(self, name: str, fn: Callable[..., Any], *, policy: StepPolicy | None = None) -> None:
        """``fn``: a plain or ``async def`` function; ``*args``/``**kwargs`` parameters are not filled."""
        super().__init__(name, policy)
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        params = inspect.signature(fn).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        self._params = [p for p in params if p.kind in kinds]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The function's parameter names."""
        return tuple(p.name for p in self._params)

    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """The function's qualified name and a hash of its source (a changed function misses the cache)."""
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            source = ""
        return {"kind": self.kind, "function": f"{getattr(self.fn, '__module__', '')}."
                                                f"{getattr(self.fn, '__qualname__', repr(self.fn))}",
                "source_sha256": hashlib.sha256(source.encode()).hexdigest(), **self.policy.describe()}

    async def run(self, ctx: RunContext, values: Mapping[str, Any], backend: str | None = None) -> StepOutput:
        """Call the function; a missing value without a default is a TypeError naming it."""
        kwargs: dict[str, Any] = {}
        for p in self._params:
            if p.name in values:
                kwargs[p.name] = values[p.name]
            elif p.default is inspect.Parameter.empty:
                raise TypeError(f"step {self.name!r}: no input or step result named {p.name!r}")
        if inspect.iscoroutinefunction(self.fn):
            return StepOutput(await self.fn(**kwargs))
        return StepOutput(await asyncio.to_thread(self.fn, **kwargs))
