"""Check digits that separate real identifiers from random digit runs: Luhn (cards) and ISO 7064 mod-97 (IBAN)."""

from __future__ import annotations


def luhn_valid(digits: str) -> bool:
    """True when the all-digit string ``digits`` passes the Luhn check (payment card numbers)."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """True when ``iban`` (letters and digits, no spaces) has a valid shape and mod-97 remainder 1."""
    iban = iban.upper()
    if not (15 <= len(iban) <= 34 and iban.isascii() and iban.isalnum()):
        return False
    if not (iban[:2].isalpha() and iban[2:4].isdigit()):
        return False
    rearranged = iban[4:] + iban[:4]
    # Letters become two-digit numbers (A=10 ... Z=35); fold the remainder as we go, never a big int.
    remainder = 0
    for char in rearranged:
        for digit in str(int(char, 36)):
            remainder = (remainder * 10 + int(digit)) % 97
    return remainder == 1
