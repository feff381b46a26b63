"""The audit trail and the guardrails agree on what a secret or PII is: one corpus, the same findings."""

from __future__ import annotations

import pytest
from bastion.audit.redact import redact, trail_label
from bastion.resilience.detectors import PII_RECOGNIZERS, SECRET_PATTERNS, find_sensitive, placeholder
from bastion.resilience.guardrails import GuardrailPipeline, PiiGuard, SecretsGuard

# (value, detector kind); values are split so secret scanners of this repo do not flag the test itself
CORPUS = [
    ("AKIA" + "IOSFODNN7EXAMPLE", "AWS_ACCESS_KEY"),
    ("ABIA" + "IOSFODNN7EXAMPLE", "AWS_ACCESS_KEY"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "PRIVATE_KEY"),
    ("ghp_" + "a1B2c3D4" * 4 + "e5F6", "GITHUB_TOKEN"),
    ("github_pat_" + "11ABCDEFG0123456789_abcdefgh", "GITHUB_TOKEN"),
    ("xoxb-" + "123456789012-abcdefABCDEF", "SLACK_TOKEN"),
    ("https://hooks.slack.com/services/" + "T0ABC1234/B0DEF5678/abcdEFGH1234ijkl", "SLACK_WEBHOOK"),
    ("sk-proj-" + "Ab12Cd34Ef56Gh78Ij90Kl12", "OPENAI_KEY"),
    ("AIza" + "SyD3x4mpl3K3y_w1th-35charsABCDEFGHI", "GOOGLE_API_KEY"),
    ("eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "JWT"),
    ("Authorization: Bearer " + "Zm9vYmFyYmF6cXV4LnF1dXg", "BEARER_TOKEN"),
    ('api_key = "Zk3f9QpL2xW8vR4tY7bN"', "GENERIC_API_KEY"),
    ("password = hunter2hunter2", "GENERIC_API_KEY"),
    ("4111 1111 1111 1111", "CARD"),
    ("3782-822463-10005", "CARD"),
    ("４１１１１１１１１１１１１１１１", "CARD"),  # full-width digits: both look at the NFKC view
    ("DE89 3704 0044 0532 0130 00", "IBAN"),
    ("jane.doe+tag@mail.example.co.uk", "EMAIL"),
    ("+44 20 7946 0958", "PHONE"),
    ("(415) 555-2671", "PHONE"),
]
# Look-alikes neither may flag (the first two are where the trail and the guards used to disagree).
NEAR_MISSES = [
    "ghp_" + "a1B2c3D4e5" * 3,  # 30 characters: too short for a GitHub token
    "AKIA" + "IOSFODNN7EXAMPL",  # 15 characters after the prefix
    "order 4111111111111112", "0000 0000 0000 0000", "password=xxxxxxxxxxxxxxxxxxxx", "the token is expired",
    "on 2024-01-15 at 10:30", "room 1234, code 555-12", "GB82WEST12345698765433", "mail me at user@localhost",
    "sk-short", "Bearer abc",
]


def guards_redaction(text: str) -> tuple[set[str], str]:
    """The kinds the secrets and PII guards find in ``text``, and the text they release, marked as the trail marks it."""
    result = GuardrailPipeline([SecretsGuard(action="redact"), PiiGuard(action="redact")]).check_output(text)
    kinds = {f.kind for decision in result.decisions for f in decision.findings}
    released = result.text
    for kind in kinds:
        released = released.replace(placeholder(kind), f"[REDACTED:{trail_label(kind)}]")
    return kinds, released


def test_the_corpus_covers_every_detector() -> None:
    assert {kind for _, kind in CORPUS} == set(SECRET_PATTERNS) | set(PII_RECOGNIZERS)


@pytest.mark.parametrize(("value", "kind"), CORPUS)
def test_trail_and_guards_redact_the_same_span(value: str, kind: str) -> None:
    text = f"note: {value} thanks"
    kinds, released = guards_redaction(text)
    assert kind in kinds and {f.kind for f in find_sensitive(text)} == kinds
    assert redact(text) == released
    assert value not in released


def test_trail_and_guards_find_the_same_set_in_one_text() -> None:
    text = "\n".join(f"{i}. {value} ;" for i, (value, _) in enumerate(CORPUS))
    kinds, released = guards_redaction(text)
    assert kinds == {kind for _, kind in CORPUS} == {f.kind for f in find_sensitive(text)}
    assert redact(text) == released


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_neither_flags_a_look_alike(text: str) -> None:
    assert guards_redaction(text) == (set(), text)
    assert find_sensitive(text) == [] and redact(text) == text
