"""``select``: choose among labels by the model's log-probabilities of each label after a shared prompt.

A label's score is the sum of the raw logprobs of its tokens, each read after the prompt plus the
label's earlier tokens (teacher forcing). The engine has no prompt logprobs, so each position is one
``max_tokens=1`` request (``logprobs=20``) whose prompt is the shared prompt plus the label's prefix:
positions common to several labels are asked once, and the run's ``PrefixSharing`` starts the first
request alone, so the shared prompt is prefilled once and every other request hits the prefix cache.
A target outside the raw top 20 is read from a second request constrained to the label continuations
(structured outputs ``choice``, whose logprobs are the raw ones renormalised over the allowed tokens):
an allowed token that is also in the raw top 20 gives the normaliser, so the target's raw logprob is
exact; without such a token it scores the 20th raw logprob (an upper bound; ``exact`` is then False).
Every request goes through the Gateway (its own audit record, the run's id in its metadata).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bastion.pipeline.policy import StepPolicy
from bastion.pipeline.prefix import shared_prefix_len
from bastion.pipeline.result import PipelineError
from bastion.pipeline.step import Step, StepOutput
from bastion.pipeline.template import Template
from bastion.sampling.params import MAX_LOGPROBS, SamplingParams
from bastion.sampling.structured_params import StructuredOutputsParams

if TYPE_CHECKING:
    from bastion.pipeline.context import ModelReply, RunContext



_RAW_PARAMS = SamplingParams(max_tokens=1, temperature=0.0, logprobs=MAX_LOGPROBS)


def _choice_params(continuations: list[str]) -> SamplingParams:
    return SamplingParams(max_tokens=1, temperature=0.0, logprobs=MAX_LOGPROBS,
                          structured_outputs=StructuredOutputsParams(choice=continuations))


class SelectStep(Step):
    """Output the label of ``labels`` the model finds most likely after ``prompt`` (a raw completion
    prompt, or with ``chat=True`` the content of one user message, rendered with the chat template).
    ``length_normalize`` ranks by mean instead of total logprob. Needs a local backend (its tokenizer).
    The scores are in the step result's ``details``."""

    kind = "select"

    def __init__(self, name: str, prompt: str, labels: Sequence[str], *, backend: str | None = None,
                 chat: bool = False, length_normalize: bool = False, policy: StepPolicy | None = None) -> None:
        """``labels``: two or more distinct non-empty strings (written as they follow the prompt)."""
        super().__init__(name, policy)
        labels = list(labels)
        if len(labels) < 2 or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"step {name!r}: labels must be two or more distinct non-empty strings, got {labels!r}")
        self.prompt = Template(prompt)
        self.labels = labels
        self.backend = backend
        self.chat = chat
        self.length_normalize = length_normalize

    def _dist(self, reply: ModelReply, backend: str) -> dict[int, float]:
        if not reply.logprobs:
            raise PipelineError(f"step {self.name!r}: backend {backend!r} returned no logprobs")
        return dict(reply.logprobs[0])

    @property
    def inputs(self) -> tuple[str, ...]:
        """The prompt's fields."""
        return self.prompt.fields

    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """Prompt, labels, scoring mode and the backend's model identity."""
        return {"kind": self.kind, "prompt": self.prompt.text, "labels": self.labels, "chat": self.chat,
                "length_normalize": self.length_normalize, "backend": self.backend,
                "model": ctx.model_identity(self.backend), **self.policy.describe()}

    async def run(self, ctx: RunContext, values: Mapping[str, Any], backend: str | None = None) -> StepOutput:
        """Score every label and output the best one."""
        name = ctx.backend_name(backend or self.backend)
        engine = ctx.engine(name)
        if engine is None:
            raise PipelineError(f"step {self.name!r}: select needs a local engine backend, {name!r} is remote")
        tok = engine.tokenizer
        text = self.prompt.render(values)
        if self.chat:
            text = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        base = tok.encode(text)
        # context text -> (label, target token, the label's text from there) read from that context
        contexts: dict[str, list[tuple[str, int, str]]] = {}
        for label in self.labels:
            full = tok.encode(text + label)
            start = min(shared_prefix_len(base, full), len(full) - 1)
            head = text if start == len(base) else tok.decode(full[:start], skip_special_tokens=False)
            for j in range(start, len(full)):
                context = head + tok.decode(full[start:j], skip_special_tokens=False)
                rest = tok.decode(full[j:], skip_special_tokens=False)
                contexts.setdefault(context, []).append((label, full[j], rest))
        texts = list(contexts)
        replies = await asyncio.gather(*(ctx.generate(self.name, t, _RAW_PARAMS, name) for t in texts))
        dists = [self._dist(reply, name) for reply in replies]
        missing = [i for i, t in enumerate(texts) if any(target not in dists[i] for _, target, _ in contexts[t])]
        constrained = await asyncio.gather(*(
            ctx.generate(self.name, texts[i], _choice_params(sorted({r for _, _, r in contexts[texts[i]]})), name)
            for i in missing))
        replies += constrained
        totals = {label: 0.0 for label in self.labels}
        counts = {label: 0 for label in self.labels}
        exact = True
        fixed = dict(zip(missing, (self._dist(r, name) for r in constrained), strict=True))
        for i, t in enumerate(texts):
            raw = dists[i]
            shift = None
            if i in fixed:  # raw = constrained + log Z, Z from a token both distributions hold
                shift = next((raw[k] - v for k, v in fixed[i].items() if k in raw), None)
            for label, target, _ in contexts[t]:
                if target in raw:
                    value = raw[target]
                elif shift is not None and target in fixed[i]:
                    value = fixed[i][target] + shift
                else:
                    value, exact = min(raw.values()), False
                totals[label] += value
                counts[label] += 1
        scores = {lb: totals[lb] / counts[lb] if self.length_normalize else totals[lb] for lb in self.labels}
        best = max(self.labels, key=lambda lb: scores[lb])
        return StepOutput(best, sum(r.prompt_tokens for r in replies), sum(r.output_tokens for r in replies), name,
                          [r.audit_id for r in replies if r.audit_id],
                          details={"scores": {lb: round(s, 4) for lb, s in scores.items()}, "exact": exact,
                                   "requests": len(replies)})
