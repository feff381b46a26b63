"""Token-limit guard, counting with the serving backend's own tokenizer (exact, and nothing to download)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bastion.resilience.detectors import Finding
from bastion.resilience.guardrails.base import BOTH_STAGES, GuardDecision, Stage, validate_action


class TokenLimitGuard:
    """Flags a text longer than ``max_tokens`` tokens as counted by ``count_tokens``.

    Supports ``block`` and ``log`` only: cutting text at a token boundary is the engine's job
    (``max_tokens``), not a redaction.
    """

    name = "token_limit"
    needs_full_text = True

    def __init__(self, count_tokens: Callable[[str], int], max_tokens: int, action: str = "block",
                 stages: Iterable[str] = BOTH_STAGES, name: str | None = None) -> None:
        """Use ``count_tokens`` (e.g. ``lambda s: len(tokenizer.encode(s))``) against ``max_tokens``."""
        self.action = validate_action(action, ("block", "log"))
        if not callable(count_tokens):
            raise ValueError("count_tokens: must be a callable str -> int")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.stages = frozenset(stages)
        self.name = name or self.name

    def check(self, text: str, stage: Stage) -> GuardDecision:
        """Count the tokens of ``text`` and compare with the limit."""
        if stage not in self.stages:
            return GuardDecision(self.name, stage, "allow", [], text)
        count = self.count_tokens(text)
        if count <= self.max_tokens:
            return GuardDecision(self.name, stage, "allow", [], text)
        finding = Finding("TOKEN_LIMIT", 0, len(text), f"{count} tokens > limit {self.max_tokens}")
        return GuardDecision(self.name, stage, self.action, [finding], text)
