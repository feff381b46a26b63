"""Run a list of guards over one text and combine their decisions; the default pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bastion.resilience.detectors import Finding, apply_redactions
from bastion.resilience.guardrails.base import Action, GuardDecision, Guardrail, Stage
from bastion.resilience.guardrails.injection import PromptInjectionGuard
from bastion.resilience.guardrails.invisible import InvisibleTextGuard
from bastion.resilience.guardrails.pii import PiiGuard
from bastion.resilience.guardrails.secrets import SecretsGuard
from bastion.resilience.guardrails.token_limit import TokenLimitGuard

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineResult:
    """``allowed`` is False when any guard blocked; ``text`` carries every redaction; ``decisions`` has
    one entry per guard, in pipeline order (allow decisions included, for the audit trail)."""

    allowed: bool
    text: str
    decisions: list[GuardDecision] = field(default_factory=list)

    @property
    def blocking(self) -> list[GuardDecision]:
        """The decisions that blocked."""
        return [d for d in self.decisions if d.action == "block"]

    @property
    def triggered(self) -> list[GuardDecision]:
        """The decisions with at least one finding."""
        return [d for d in self.decisions if d.triggered]


class GuardrailPipeline:
    """Runs every guard on the *original* text, so all findings share one coordinate system, then
    applies the redactions of every ``redact`` decision at once.

    A guard that raises fails closed when its action is ``block`` or ``redact`` (a broken PII
    redactor must not leak) and open when it only logs; either way the error is a ``GUARD_ERROR``
    finding in its decision.
    """

    def __init__(self, guards: Sequence[Guardrail]) -> None:
        """Use ``guards`` in order; names must be unique (they identify decisions in audit records)."""
        self.guards = list(guards)
        names = [g.name for g in self.guards]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"guards: guard names must be unique, repeated: {duplicates}")

    def check_input(self, text: str) -> PipelineResult:
        """Check a prompt before it reaches the model."""
        return self.check(text, "input")

    def check_output(self, text: str) -> PipelineResult:
        """Check a complete model output."""
        return self.check(text, "output")

    def check(self, text: str, stage: Stage) -> PipelineResult:
        """Run every guard on ``text`` at ``stage`` and combine the decisions."""
        decisions = [self._run(guard, text, stage) for guard in self.guards]
        redactions = [f for d in decisions if d.action == "redact" for f in d.findings]
        released = apply_redactions(text, redactions) if redactions else text
        return PipelineResult(all(d.action != "block" for d in decisions), released, decisions)

    @staticmethod
    def _run(guard: Guardrail, text: str, stage: Stage) -> GuardDecision:
        try:
            return guard.check(text, stage)
        except Exception as exc:  # fail closed or open per the guard's action, never crash the request
            _log.exception("guard %r failed", guard.name)
            action: Action = "log" if guard.action == "log" else "block"
            finding = Finding("GUARD_ERROR", 0, len(text), f"{type(exc).__name__}: {exc}")
            return GuardDecision(guard.name, stage, action, [finding], text)


def default_pipeline(count_tokens: Callable[[str], int] | None = None,
                     max_input_tokens: int | None = None) -> GuardrailPipeline:
    """Sensible offline defaults.

    * Unicode tag characters and bidi controls: block (hidden or reordered instructions).
    * Zero-width characters: log (they also appear in legitimate emoji sequences).
    * Secrets: block, input and output.
    * PII (cards, IBANs, emails, phones): redact, input and output.
    * Prompt injection phrasings: block, input only.
    * With ``count_tokens`` and ``max_input_tokens``: a token limit on the input.
    """
    guards: list[Guardrail] = [
        InvisibleTextGuard({"UNICODE_TAG", "BIDI_CONTROL"}, action="block", name="hidden_text"),
        InvisibleTextGuard({"ZERO_WIDTH"}, action="log", name="zero_width"),
        SecretsGuard(action="block"),
        PiiGuard(action="redact"),
        PromptInjectionGuard(action="block"),
    ]
    if (count_tokens is None) != (max_input_tokens is None):
        raise ValueError("max_input_tokens: give both count_tokens and max_input_tokens, or neither")
    if count_tokens is not None and max_input_tokens is not None:
        guards.append(TokenLimitGuard(count_tokens, max_input_tokens, action="block", stages=("input",)))
    return GuardrailPipeline(guards)
