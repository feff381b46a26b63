"""Property tests: guards never crash on arbitrary Unicode; redaction never leaks a detected card."""

from __future__ import annotations

from bastion.resilience.guardrails import (
    BannedSubstringsGuard,
    GuardrailPipeline,
    InvisibleTextGuard,
    JsonSchemaGuard,
    PiiGuard,
    PromptInjectionGuard,
    SecretsGuard,
    StreamingOutputGuard,
    TokenLimitGuard,
    default_pipeline,
    luhn_valid,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GUARDS = [InvisibleTextGuard(), SecretsGuard(), PiiGuard(), PromptInjectionGuard(),
          BannedSubstringsGuard(["secret project"]), TokenLimitGuard(lambda s: len(s.split()), 5),
          JsonSchemaGuard({"type": "object"})]
# Text that mixes the characters the detectors care about with arbitrary code points.
tricky_text = st.text(alphabet=st.one_of(
    st.characters(), st.sampled_from("0123456789 -+@.()_=:\n\u200b\u202e\U000E0041４"),
), max_size=200)


@FAST
@given(text=tricky_text)
def test_no_guard_crashes_and_spans_stay_inside_the_text(text: str) -> None:
    for guard in GUARDS:
        for stage in ("input", "output"):
            decision = guard.check(text, stage)
            assert decision.action in ("allow", "block", "redact", "log")
            for finding in decision.findings:
                assert 0 <= finding.start <= finding.end <= len(text)


def card_numbers() -> st.SearchStrategy[str]:
    """Luhn-valid 16-digit numbers (not one repeated digit), optionally grouped by 4."""
    def make(body: str, separator: str) -> str:
        """Complete ``body`` with its Luhn check digit and group it by 4."""
        number = body + next(d for d in "0123456789" if luhn_valid(body + d))
        return separator.join(number[i:i + 4] for i in range(0, 16, 4))

    body = st.text(alphabet="0123456789", min_size=15, max_size=15).filter(lambda b: len(set(b)) > 1)
    return st.builds(make, body, st.sampled_from(["", " ", "-"]))


@FAST
@given(prefix=tricky_text, card=card_numbers(), suffix=tricky_text)
def test_redaction_never_leaks_a_detected_card(prefix: str, card: str, suffix: str) -> None:
    text = f"{prefix} {card} {suffix}"
    decision = PiiGuard().check(text, "output")
    cards = [text[f.start:f.end] for f in decision.findings if f.kind == "CARD"]
    assert cards, "a Luhn-valid card between spaces is always detected"
    for found in cards:
        assert found not in decision.text
    assert card not in decision.text


@FAST
@given(prefix=st.text(alphabet="abc xyz.,", max_size=40), card=card_numbers(),
       suffix=st.text(alphabet="abc xyz.,", max_size=40), cuts=st.lists(st.integers(0, 120), max_size=8))
def test_streaming_never_releases_a_card(prefix: str, card: str, suffix: str, cuts: list[int]) -> None:
    text = f"{prefix} {card} {suffix}"
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    guard = StreamingOutputGuard(GuardrailPipeline([PiiGuard()]), holdback_chars=32)
    released = "".join(guard.push(text[a:b]) for a, b in zip(bounds, bounds[1:])) + guard.finish()
    assert card not in released
    assert released == GuardrailPipeline([PiiGuard()]).check_output(text).text


@FAST
@given(text=tricky_text)
def test_default_pipeline_never_crashes(text: str) -> None:
    result = default_pipeline().check_input(text)
    assert isinstance(result.allowed, bool)
    assert all(d.action != "block" for d in result.decisions) == result.allowed
