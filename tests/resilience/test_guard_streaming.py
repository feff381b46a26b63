"""Streaming output guard: hold-back catches patterns split across deltas before anything leaks."""

from __future__ import annotations

import pytest
from bastion.errors import GuardrailViolation
from bastion.resilience.guardrails import (
    GuardrailPipeline,
    JsonSchemaGuard,
    PiiGuard,
    SecretsGuard,
    StreamingOutputGuard,
    default_pipeline,
)

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


def stream(guard: StreamingOutputGuard, deltas: list[str]) -> list[str]:
    """Push every delta then finish; the released pieces in order."""
    return [guard.push(delta) for delta in deltas] + [guard.finish()]


def test_card_split_across_deltas_is_redacted_and_never_released_raw() -> None:
    guard = StreamingOutputGuard(GuardrailPipeline([PiiGuard()]), holdback_chars=24)
    pieces = stream(guard, ["Your card is 4111 11", "11 1111 1111, kept", " on file. Thanks for waiting!"])
    assert "".join(pieces) == "Your card is [REDACTED:CARD], kept on file. Thanks for waiting!"
    assert all("4111" not in piece and "1111" not in piece for piece in pieces)
    assert [(f.kind, f.start, f.end) for d in guard.decisions for f in d.findings] == [("CARD", 13, 32)]


def test_one_character_deltas_match_the_whole_text_result() -> None:
    text = "contact me at jane@example.com or +1 415 555 2671, card 5500-0000-0000-0004."
    pipeline = GuardrailPipeline([PiiGuard()])
    guard = StreamingOutputGuard(pipeline, holdback_chars=32)
    assert "".join(stream(guard, list(text))) == pipeline.check_output(text).text


def test_blocking_secret_split_across_deltas_raises_before_release() -> None:
    guard = StreamingOutputGuard(GuardrailPipeline([SecretsGuard()]), holdback_chars=32)
    released = guard.push("Sure, the key is AKIA")
    assert "AKIA" not in released
    with pytest.raises(GuardrailViolation) as info:
        guard.push(AWS_KEY[4:] + " and more text")
    decision = info.value.decisions[0]
    assert decision.guard == "secrets" and decision.findings[0].start == len("Sure, the key is ")
    with pytest.raises(GuardrailViolation):
        guard.push("anything")  # the stream stays failed so the caller aborts the sequence


def test_release_lags_by_the_holdback_only() -> None:
    guard = StreamingOutputGuard(default_pipeline(), holdback_chars=10)
    assert guard.push("a" * 25) == "a" * 15
    assert guard.released_chars == 15
    assert guard.push("b" * 5) == "a" * 5  # 30 received, 10 held back
    assert guard.finish() == "a" * 5 + "b" * 5


def test_full_text_guards_run_at_finish() -> None:
    schema = {"type": "object", "required": ["ok"]}
    pipeline = GuardrailPipeline([JsonSchemaGuard(schema)])
    good = StreamingOutputGuard(pipeline, holdback_chars=4)
    assert "".join(stream(good, ['{"o', 'k": tr', "ue}"])) == '{"ok": true}'
    bad = StreamingOutputGuard(pipeline, holdback_chars=4)
    bad.push('{"nope": 1')
    with pytest.raises(GuardrailViolation, match="json_schema"):
        bad.finish()


def test_misuse_is_rejected() -> None:
    with pytest.raises(ValueError, match="holdback_chars"):
        StreamingOutputGuard(default_pipeline(), holdback_chars=-1)
    guard = StreamingOutputGuard(default_pipeline())
    guard.finish()
    with pytest.raises(RuntimeError, match="finish"):
        guard.push("late")
