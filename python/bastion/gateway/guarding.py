"""The Gateway's side of guardrails: input checks, the streaming output gate, decision records.

The guardrail pipeline (``bastion.resilience.guardrails``) decides; this module applies its
decisions to a request: it rewrites redacted input, keeps held-back output from reaching the
client, and makes sure token ids (and their logprobs) are never released ahead of (or instead of)
their checked text.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from bastion.audit.record import GuardDecisionRecord
from bastion.errors import GuardrailViolation
from bastion.gateway.types import Message

if TYPE_CHECKING:
    from bastion.resilience.guardrails import GuardDecision, GuardrailPipeline, StreamingOutputGuard
    from bastion.sampling.logprobs import TokenLogprobs


def output_guard_factory(pipeline: GuardrailPipeline | None) -> Callable[[], StreamingOutputGuard] | None:
    """A maker of one ``StreamingOutputGuard`` per attempt over ``pipeline`` (None: no output checks)."""
    if pipeline is None:
        return None
    from bastion.resilience.guardrails import StreamingOutputGuard

    return lambda: StreamingOutputGuard(pipeline)


def decision_records(decisions: Iterable[GuardDecision], stage: str,
                     backend: str | None = None) -> list[GuardDecisionRecord]:
    """Audit records for the decisions that found something (quiet 'allow' decisions are skipped)."""
    records = []
    for d in decisions:
        if not d.findings and d.action == "allow":
            continue
        kinds = sorted({f.kind for f in d.findings})
        records.append(GuardDecisionRecord(
            stage="output" if stage == "output" else "input", guard=d.guard, action=d.action,
            reason=", ".join(kinds) or None, backend=backend,
        ))
    return records


def check_input(pipeline: GuardrailPipeline | None, prompt: str | None, messages: list[Message] | None
                ) -> tuple[str | None, list[Message] | None, list[GuardDecision]]:
    """Run the input guardrails on the prompt or on every message's content.

    Returns the (possibly redacted) prompt/messages and all decisions; raises
    ``GuardrailViolation`` carrying every decision when any text is blocked.
    """
    if pipeline is None:
        return prompt, messages, []
    decisions: list[GuardDecision] = []

    def checked(text: str) -> str:
        """One text through the pipeline: its released (redacted) form, or raise when blocked."""
        result = pipeline.check_input(text)
        decisions.extend(result.decisions)
        if not result.allowed:
            raise GuardrailViolation("input refused by guardrails", decisions)
        return result.text

    if messages is None:
        return checked(prompt or ""), None, decisions
    return None, [{**m, "content": checked(m["content"])} for m in messages], decisions


class GateRelease(NamedTuple):
    """What the gate lets through at one step: text, token ids, token count and the ids' logprobs.

    ``logprobs`` is aligned one-to-one with ``token_ids``, or None when the backend gave none.
    """

    text: str
    token_ids: tuple[int, ...]
    num_tokens: int
    logprobs: tuple[TokenLogprobs, ...] | None = None


def join_logprobs(first: tuple[TokenLogprobs, ...] | None,
                  second: tuple[TokenLogprobs, ...] | None) -> tuple[TokenLogprobs, ...] | None:
    """``first`` then ``second``; None only when both are None (the backend gave none)."""
    if first is None:
        return second
    return first if second is None else first + second


class OutputGate:
    """Per-attempt release gate between a backend's chunks and the client.

    Text goes through the streaming output guard (held back until checked). Token ids of a chunk
    are released once all of that chunk's text has been released unchanged; after a redaction the
    released text no longer matches the tokens, so ids stop flowing (they would reveal the
    redacted text) while token *counts* still do. A chunk's logprobs travel exactly with its ids
    (released together, withheld together), so they never outnumber the released ids.

    ``check_every_chars``: text is handed to the guard once this many characters are waiting
    (and always at the end). The guard holds back its window anyway, so this adds at most that
    many characters of release lag while cutting the guard runs per token several-fold.
    """

    def __init__(self, make_guard: Callable[[], StreamingOutputGuard] | None, check_every_chars: int = 16) -> None:
        if check_every_chars < 1:
            raise ValueError(f"check_every_chars must be >= 1, got {check_every_chars}")
        self._guard = make_guard() if make_guard is not None else None
        self._check_every = check_every_chars
        # (text end, n tokens, ids, their logprobs or None) per chunk not yet released
        self._pending: deque[tuple[int, int, tuple[int, ...], tuple[TokenLogprobs, ...] | None]] = deque()
        self._pushed = ""  # all text received from the backend
        self._guarded_len = 0  # how much of it the guard has seen
        self._released_len = 0
        self._modified = False
        self._has_logprobs = False  # the backend gave logprobs: releases carry a tuple (maybe empty), not None

    @property
    def decisions(self) -> list[GuardDecision]:
        """The output guard's decisions so far (redactions, logs and the block, if any)."""
        return list(self._guard.decisions) if self._guard is not None else []

    def push(self, text: str, token_ids: tuple[int, ...], num_tokens: int,
             logprobs: tuple[TokenLogprobs, ...] | None = None) -> GateRelease:
        """Feed one chunk (``logprobs`` aligned with ``token_ids``, or None); return what is released now."""
        if self._guard is None:
            return GateRelease(text, token_ids, num_tokens, logprobs)
        self._pushed += text
        self._has_logprobs = self._has_logprobs or logprobs is not None
        self._pending.append((len(self._pushed), num_tokens, token_ids, logprobs))
        if len(self._pushed) - self._guarded_len < self._check_every:
            return self._nothing()
        return self._release(self._guard.push(self._unguarded()))

    def finish(self) -> GateRelease:
        """End of the attempt's stream: release the held-back rest (raises if it is blocked)."""
        if self._guard is None:
            return GateRelease("", (), 0)
        rest = self._unguarded()
        released = self._guard.push(rest) if rest else ""
        return self._release(released + self._guard.finish(), final=True)

    def _nothing(self) -> GateRelease:
        return GateRelease("", (), 0, () if self._has_logprobs else None)

    def _unguarded(self) -> str:
        text = self._pushed[self._guarded_len:]
        self._guarded_len = len(self._pushed)
        return text

    def _release(self, released: str, final: bool = False) -> GateRelease:
        ids: list[int] = []
        logprobs: list[TokenLogprobs] = []
        count = 0
        if released and not self._modified:
            start = self._released_len
            original = self._pushed[start:start + len(released)]
            if original != released:  # a guard rewrote (redacted) text: ids stop at the first change
                safe_end = start + len(os.path.commonprefix([original, released]))
                count += self._pop_ids(safe_end, ids, logprobs)
                self._modified = True
        self._released_len += len(released)
        limit = len(self._pushed) if final or self._modified else self._released_len
        count += self._pop_ids(limit, None, None) if self._modified else self._pop_ids(limit, ids, logprobs)
        return GateRelease(released, tuple(ids), count, tuple(logprobs) if self._has_logprobs else None)

    def _pop_ids(self, text_end: int, ids: list[int] | None, logprobs: list[TokenLogprobs] | None) -> int:
        """Pop the chunks whose text ends by ``text_end``; append their ids and logprobs unless None."""
        count = 0
        while self._pending and self._pending[0][0] <= text_end:
            _, n, chunk_ids, chunk_logprobs = self._pending.popleft()
            count += n
            if ids is not None:
                ids.extend(chunk_ids)
            if logprobs is not None and chunk_logprobs is not None:
                logprobs.extend(chunk_logprobs)
        return count
