"""A model call: a prompt (or chat messages) template, sampling parameters and a Gateway backend."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from bastion.gateway.trace import sampling_dict
from bastion.pipeline.policy import StepPolicy
from bastion.pipeline.result import PipelineError
from bastion.pipeline.step import Step, StepOutput
from bastion.pipeline.template import Template
from bastion.sampling.params import SamplingParams

if TYPE_CHECKING:
    from bastion.pipeline.context import RunContext

OutputMode = Literal["text", "json"]


class ModelStep(Step):
    """Render ``prompt`` (a raw completion) or ``messages`` (a chat: ``{"role", "content"}`` templates) and
    call the model on ``backend`` (a Gateway backend name; None: the Gateway's first) through the run's
    Gateway, so the call gets the Gateway's rate limits, guardrails, breakers and audit record.

    ``params``: ``SamplingParams`` or a dict of its fields (``structured_outputs`` included). ``output``:
    "text" (stripped) or "json" (parsed); default "json" when ``structured_outputs`` asks for JSON.
    """

    kind = "model"

    def __init__(self, name: str, prompt: str | None = None, *, messages: list[dict[str, str]] | None = None,
                 params: SamplingParams | Mapping[str, Any] | None = None, backend: str | None = None,
                 output: OutputMode | None = None, policy: StepPolicy | None = None) -> None:
        """Exactly one of ``prompt`` and ``messages``; ValueError naming what is wrong."""
        super().__init__(name, policy)
        if (prompt is None) == (messages is None):
            raise ValueError(f"step {name!r}: give exactly one of prompt and messages")
        self.prompt = Template(prompt) if prompt is not None else None
        self.messages = [(m["role"], Template(m["content"])) for m in messages] if messages is not None else None
        self.params = params if isinstance(params, SamplingParams) else SamplingParams(**dict(params or {}))
        self.backend = backend
        so = self.params.structured_outputs
        wants_json = so is not None and (so.json is not None or so.json_object)
        self.output: OutputMode = output or ("json" if wants_json else "text")
        if self.output not in ("text", "json"):
            raise ValueError(f"step {name!r}: output must be 'text' or 'json', got {self.output!r}")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The fields of the prompt or of every message."""
        templates = [self.prompt] if self.prompt is not None else [t for _, t in self.messages or []]
        return tuple(dict.fromkeys(f for t in templates if t is not None for f in t.fields))

    def render(self, values: Mapping[str, Any]) -> str | list[dict[str, str]]:
        """The prompt text, or the chat messages, with the fields filled."""
        if self.prompt is not None:
            return self.prompt.render(values)
        return [{"role": role, "content": t.render(values)} for role, t in self.messages or []]

    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """Templates, sampling parameters, output mode, fallback, and the backend's model identity."""
        return {"kind": self.kind, "prompt": self.prompt.text if self.prompt else None,
                "messages": [[r, t.text] for r, t in self.messages] if self.messages else None,
                "params": sampling_dict(self.params), "output": self.output, "backend": self.backend,
                "model": ctx.model_identity(self.backend), **self.policy.describe()}

    async def run(self, ctx: RunContext, values: Mapping[str, Any], backend: str | None = None) -> StepOutput:
        """One Gateway call; a "json" step fails (and may retry) when the answer is not JSON."""
        reply = await ctx.generate(self.name, self.render(values), self.params, backend or self.backend)
        output: Any = reply.text.strip()
        if self.output == "json":
            try:
                output = json.loads(reply.text)
            except json.JSONDecodeError as e:
                raise PipelineError(f"step {self.name!r}: the answer is not JSON ({e}): {reply.text[:200]!r}") from e
        return StepOutput(output, reply.prompt_tokens, reply.output_tokens, reply.backend,
                          [reply.audit_id] if reply.audit_id else [])
