"""PII recognizers: checksums separate real cards and IBANs from look-alikes; redaction placeholders."""

from __future__ import annotations

import pytest
from bastion.resilience.guardrails import PiiGuard, iban_valid, luhn_valid

VALID_CARDS = ["4111111111111111", "5500 0000 0000 0004", "3782-822463-10005", "6011000990139424",
               "4222222222222"]  # Visa, Mastercard, Amex (15, hyphens), Discover, 13-digit Visa


@pytest.mark.parametrize("number", VALID_CARDS)
def test_luhn_valid_cards_are_redacted(number: str) -> None:
    decision = PiiGuard().check(f"pay with {number} today", "input")
    assert decision.action == "redact"
    assert decision.text == "pay with [REDACTED:CARD] today"


@pytest.mark.parametrize("number", ["4111111111111112", "5500 0000 0000 0005", "1234 5678 9012 3456",
                                    "0000 0000 0000 0000", "411111111111"])
def test_invalid_or_degenerate_numbers_are_not_cards(number: str) -> None:
    decision = PiiGuard(entities=["CARD"]).check(f"order {number}", "input")
    assert decision.findings == []
    assert decision.action == "allow"


def test_luhn_and_iban_checksums_directly() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert not luhn_valid("4111 1111")  # digits only
    assert iban_valid("GB82WEST12345698765432") and iban_valid("de89370400440532013000")
    assert not iban_valid("GB82WEST12345698765433") and not iban_valid("GB82")


def test_card_next_to_a_date_in_one_digit_run_is_found() -> None:
    decision = PiiGuard(entities=["CARD"]).check("on 2024-01-15 4111 1111 1111 1111", "output")
    assert decision.text == "on 2024-01-15 [REDACTED:CARD]"


def test_full_width_digits_are_normalized_before_matching() -> None:
    decision = PiiGuard().check("card ４１１１１１１１１１１１１１１１", "input")
    assert decision.text == "card [REDACTED:CARD]"


@pytest.mark.parametrize(("text", "expected"), [
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN [REDACTED:IBAN], thanks"),
    ("to GB82WEST12345698765432.", "to [REDACTED:IBAN]."),
    ("to GB82WEST12345698765433.", "to GB82WEST12345698765433."),  # one digit off: mod-97 fails
])
def test_ibans(text: str, expected: str) -> None:
    assert PiiGuard(entities=["IBAN"]).check(text, "input").text == expected


def test_emails_and_phones() -> None:
    text = "mail jane.doe+tag@mail.example.co.uk or call +44 20 7946 0958 / (415) 555-2671 on 2024-01-15"
    decision = PiiGuard().check(text, "output")
    assert decision.text == ("mail [REDACTED:EMAIL] or call [REDACTED:PHONE] / [REDACTED:PHONE] on 2024-01-15")
    assert [f.kind for f in decision.findings] == ["EMAIL", "PHONE", "PHONE"]


def test_short_numbers_are_not_phones() -> None:
    assert PiiGuard(entities=["PHONE"]).check("room 1234, code 555-12, year 2024", "input").findings == []


def test_block_and_log_actions_keep_text_and_report_spans() -> None:
    text = "card 4111111111111111"
    blocked = PiiGuard(action="block").check(text, "input")
    logged = PiiGuard(action="log").check(text, "input")
    assert (blocked.action, blocked.text) == ("block", text)
    assert (logged.action, logged.text) == ("log", text)
    assert (logged.findings[0].start, logged.findings[0].end) == (5, 21)


def test_stage_filter_and_bad_config() -> None:
    assert PiiGuard(stages=["output"]).check("4111111111111111", "input").action == "allow"
    with pytest.raises(ValueError, match="entities"):
        PiiGuard(entities=["SSN"])
    with pytest.raises(ValueError, match="action"):
        PiiGuard(action="mask")
    with pytest.raises(ValueError, match="stages"):
        PiiGuard(stages=["prefill"])
