"""Named pipelines for a service: what ``POST /v1/pipelines/{name}/runs`` looks up and runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bastion.pipeline.pipeline import Pipeline

if TYPE_CHECKING:
    from bastion.gateway import Gateway
    from bastion.pipeline.cache import ResultCache
    from bastion.pipeline.result import RunResult


class PipelineRegistry:
    """Pipelines by name, run over one Gateway and one result cache."""

    def __init__(self, gateway: Gateway, *, cache: ResultCache | None = None,
                 pipelines: Mapping[str, Pipeline] | None = None) -> None:
        """``pipelines``: name -> Pipeline to register at once."""
        self.gateway = gateway
        self.cache = cache
        self._pipelines: dict[str, Pipeline] = {}
        for name, p in (pipelines or {}).items():
            self.register(p, name=name)

    def register(self, pipeline: Pipeline, *, name: str | None = None) -> None:
        """Add ``pipeline`` under ``name`` (default: its own name); ValueError when the name is taken."""
        key = name or pipeline.name
        if key in self._pipelines:
            raise ValueError(f"a pipeline named {key!r} is already registered")
        self._pipelines[key] = pipeline

    def get(self, name: str) -> Pipeline:
        """The pipeline called ``name``; KeyError (a 404) otherwise."""
        return self._pipelines[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pipelines)

    def __contains__(self, name: object) -> bool:
        return name in self._pipelines

    async def run(self, name: str, inputs: Mapping[str, Any] | None = None, *, user: str | None = None,
                  tenant: str | None = None, run_id: str | None = None) -> RunResult:
        """Run pipeline ``name`` on the registry's Gateway and cache (KeyError for an unknown name;
        PipelineError for inputs that clash with step names)."""
        return await self.get(name).run(inputs, gateway=self.gateway, cache=self.cache, user=user, tenant=tenant,
                                        run_id=run_id)
