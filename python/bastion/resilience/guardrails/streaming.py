"""Guard a streamed output before it is released, delta by delta, with a small hold-back window.

Each :meth:`StreamingOutputGuard.push` re-checks the unreleased tail plus ``context_chars`` of already
released text, then releases everything except the last ``holdback_chars`` characters. A pattern split
across deltas (``4111 1111`` + `` 1111 1111``) is therefore seen whole before any of it leaves, as long
as it is no longer than the hold-back. A redactable finding that reaches into the held-back part holds
the release at its start until it is complete. On a block the guard raises
:class:`~bastion.errors.GuardrailViolation`, so the caller can abort the sequence in the engine and
free its KV blocks at once instead of generating text nobody will see.
"""

from __future__ import annotations

from bastion.errors import GuardrailViolation
from bastion.resilience.detectors import Finding, apply_redactions
from bastion.resilience.guardrails.base import GuardDecision
from bastion.resilience.guardrails.pipeline import GuardrailPipeline, PipelineResult


class StreamingOutputGuard:
    """Wraps a pipeline for one streamed output. Not thread-safe: one per sequence.

    ``decisions`` collects the triggered decisions with offsets into the whole output (their ``text``
    is empty: the released text is what :meth:`push` and :meth:`finish` return). Guards that need the
    full text (token limit, JSON schema) run once, in :meth:`finish`.
    """

    def __init__(self, pipeline: GuardrailPipeline, holdback_chars: int = 64, context_chars: int = 128) -> None:
        """Hold back ``holdback_chars`` (>= the longest pattern to catch) and re-check ``context_chars``
        of released text (for patterns that depend on what precedes them, like ``api_key=``)."""
        if holdback_chars < 0:
            raise ValueError(f"holdback_chars: must be >= 0, got {holdback_chars}")
        if context_chars < 0:
            raise ValueError(f"context_chars: must be >= 0, got {context_chars}")
        self.holdback_chars = holdback_chars
        self.context_chars = context_chars
        self._span_pipeline = GuardrailPipeline(
            [g for g in pipeline.guards if not getattr(g, "needs_full_text", False)])
        self._full_text_pipeline = GuardrailPipeline(
            [g for g in pipeline.guards if getattr(g, "needs_full_text", False)])
        self._chunks: list[str] = []  # the whole output, for the full-text guards
        self._length = 0  # characters received
        self._base = 0  # offset of _tail in the whole output
        self._tail = ""  # output[_base:]: released context plus everything unreleased
        self._released = 0  # characters of the output already released
        self._seen: set[tuple[str, str, int, int]] = set()
        self._violation: GuardrailViolation | None = None
        self._finished = False
        self.decisions: list[GuardDecision] = []

    @property
    def released_chars(self) -> int:
        """How many characters of the output have been released so far."""
        return self._released

    def push(self, delta: str) -> str:
        """Add ``delta``; return the text that is now safe to release (possibly empty)."""
        self._check_open()
        self._chunks.append(delta)
        self._length += len(delta)
        self._tail += delta
        return self._release(final=False)

    def finish(self) -> str:
        """End of the output: release the rest, then run the full-text guards on the whole output."""
        self._check_open()
        released = self._release(final=True)
        self._finished = True
        if self._full_text_pipeline.guards:
            result = self._full_text_pipeline.check_output("".join(self._chunks))
            self._collect(result, 0, self._length)
        return released

    def _check_open(self) -> None:
        if self._violation is not None:
            raise self._violation
        if self._finished:
            raise RuntimeError("StreamingOutputGuard: finish() was already called")

    def _release(self, final: bool) -> str:
        result = self._span_pipeline.check_output(self._tail)
        limit = self._length if final else max(self._released, self._length - self.holdback_chars)
        redactions = [self._absolute(f) for d in result.decisions if d.action == "redact" for f in d.findings]
        if not final:
            for finding in redactions:
                if finding.end >= limit:  # may still grow with the next delta: keep all of it
                    limit = max(self._released, min(limit, finding.start))
        self._collect(result, self._base, limit)
        chunk_start = self._released
        clipped = [Finding(f.kind, max(f.start, chunk_start) - chunk_start, min(f.end, limit) - chunk_start,
                           f.detail, f.replacement)
                   for f in redactions if f.start < limit and f.end > chunk_start]
        out = apply_redactions(self._tail[chunk_start - self._base:limit - self._base], clipped)
        self._released = limit
        new_base = max(self._base, limit - self.context_chars)
        self._tail = self._tail[new_base - self._base:]
        self._base = new_base
        return out

    def _absolute(self, finding: Finding) -> Finding:
        return Finding(finding.kind, finding.start + self._base, finding.end + self._base,
                       finding.detail, finding.replacement)

    def _collect(self, result: PipelineResult, offset: int, limit: int) -> None:
        """Record new findings that end by ``limit`` (blocking ones always); raise on a block."""
        for decision in result.triggered:
            blocking = decision.action == "block"
            fresh = []
            for f in decision.findings:
                moved = Finding(f.kind, f.start + offset, f.end + offset, f.detail, f.replacement)
                key = (decision.guard, f.kind, moved.start, moved.end)
                if (blocking or moved.end <= limit) and key not in self._seen:
                    self._seen.add(key)
                    fresh.append(moved)
            if fresh:
                self.decisions.append(GuardDecision(decision.guard, "output", decision.action, fresh, ""))
        blocked = [d for d in result.decisions if d.action == "block"]
        if blocked:
            kinds = sorted({f.kind for d in blocked for f in d.findings})
            self._violation = GuardrailViolation(
                f"output blocked by {', '.join(d.guard for d in blocked)}: {', '.join(kinds)}",
                [GuardDecision(d.guard, "output", "block",
                               [Finding(f.kind, f.start + offset, f.end + offset, f.detail) for f in d.findings], "")
                 for d in blocked])
            raise self._violation
