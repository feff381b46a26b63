"""``runs_on``: the check that keeps sm_90a kernels off GPUs they cannot run on (so "auto" uses Triton)."""

from __future__ import annotations

import pytest
from bastion.ops.cuda_archs import runs_on


@pytest.mark.parametrize(("capability", "archs", "expected"), [
    ((9, 0), "90a", True),       # H100 / H200: the default build
    ((8, 0), "90a", False),      # A100: sm_90a code does not run there
    ((10, 0), "90a", False),     # Blackwell: arch-specific sm_90a features are not forward compatible
    ((8, 6), "80", True),        # same major, later minor
    ((8, 0), "86", False),       # an earlier minor cannot run sm_86 code
    ((8, 0), "80;90a", True),
    ((9, 0), "80-real;90a", True),
    ((7, 5), "80;90a", False),
])
def test_runs_on(capability: tuple[int, int], archs: str, expected: bool) -> None:
    assert runs_on(capability, archs) is expected


def test_unreadable_architecture_is_an_error() -> None:
    with pytest.raises(ValueError, match="unreadable"):
        runs_on((9, 0), "sm90")
