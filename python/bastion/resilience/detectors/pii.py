"""PII recognizers with checksums: payment cards (Luhn), IBANs (mod-97), e-mail addresses, phone numbers.

Checksums keep false positives down (Presidio's lesson: bare digit patterns flag order ids and log
lines). ``find_pii`` runs the recognizers in a fixed order and a later one never reports a span an
earlier one already claimed, so a card number is not also reported as a phone number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from bastion.resilience.detectors.checksums import iban_valid, luhn_valid
from bastion.resilience.detectors.findings import Finding

# Runs of digits joined by single spaces or hyphens; card numbers (13-19 digits) are searched inside.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
_GROUP = re.compile(r"\d+")
# Country code, check digits, then groups of 4 (print form) or one run (electronic form).
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Optional +country, optional (area), then 2-4 digit groups joined by space, dot or hyphen.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])")


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def find_cards(text: str) -> list[Finding]:
    """Card numbers: 13-19 digits (spaces or hyphens allowed between groups) passing Luhn.

    A run like ``2024-01-15 4111 1111 1111 1111`` is split into its digit groups and every sequence of
    whole consecutive groups is tried, longest first, so a card sitting next to a date or an order number
    is still found, while a window never cuts a group in half (that would flag random digit strings).
    Numbers made of one repeated digit (``0000 0000 0000 0``) pass Luhn but are never cards.
    """
    findings = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(run.start() + g.start(), run.start() + g.end()) for g in _GROUP.finditer(run.group())]
        first = 0
        while first < len(groups):
            best = None
            for last in range(first, len(groups)):
                digits = "".join(text[start:end] for start, end in groups[first:last + 1])
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits) and len(set(digits)) > 1:
                    best = last
            if best is None:
                first += 1
                continue
            findings.append(Finding("CARD", groups[first][0], groups[best][1], "luhn-valid card number"))
            first = best + 1
    return findings


def find_ibans(text: str) -> list[Finding]:
    """IBANs whose mod-97 remainder is 1."""
    return [Finding("IBAN", m.start(), m.end(), f"IBAN ({m.group()[:2]})")
            for m in _IBAN.finditer(text) if iban_valid(m.group().replace(" ", ""))]


def find_emails(text: str) -> list[Finding]:
    """E-mail addresses."""
    return [Finding("EMAIL", m.start(), m.end(), "email address") for m in _EMAIL.finditer(text)]


def find_phones(text: str) -> list[Finding]:
    """Phone numbers: with a leading ``+``, 8-15 digits (E.164); without, 10-15 digits.

    The higher bar without ``+`` keeps ISO dates (``2024-01-15``, 8 digits) and short codes out.
    """
    findings = []
    for match in _PHONE.finditer(text):
        digits = _digits(match.group())
        low = 8 if match.group().startswith("+") else 10
        if low <= len(digits) <= 15 and len(set(digits)) > 1:
            findings.append(Finding("PHONE", match.start(), match.end(), f"phone number ({len(digits)} digits)"))
    return findings


# entity -> recognizer, in the order find_pii claims spans
PII_RECOGNIZERS: dict[str, Callable[[str], list[Finding]]] = {
    "CARD": find_cards, "IBAN": find_ibans, "EMAIL": find_emails, "PHONE": find_phones,
}


def find_pii(text: str, entities: Iterable[str] = tuple(PII_RECOGNIZERS)) -> list[Finding]:
    """Non-overlapping findings of the ``entities`` (keys of ``PII_RECOGNIZERS``), sorted by position.

    Recognizers run in ``PII_RECOGNIZERS`` order whatever the order of ``entities``; a finding that
    overlaps one of an earlier recognizer is dropped.
    """
    wanted = set(entities)
    claimed: list[Finding] = []
    for entity, recognize in PII_RECOGNIZERS.items():
        if entity not in wanted:
            continue
        for finding in recognize(text):
            if all(finding.end <= c.start or finding.start >= c.end for c in claimed):
                claimed.append(finding)
    return sorted(claimed, key=lambda f: f.start)
