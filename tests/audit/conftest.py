"""Fixtures of the audit tests: key files in a temporary directory."""

from __future__ import annotations

import pytest

from .audit_helpers import make_keys


@pytest.fixture
def keys(tmp_path):
    """(signing key PEM, public key PEM, master key) files."""
    return make_keys(tmp_path)
