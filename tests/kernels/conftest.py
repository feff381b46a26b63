"""Fixtures for the Triton kernel tests; switches Triton to its CPU interpreter when there is no GPU.

``TRITON_INTERPRET`` must be set before the ``@triton.jit`` decorators run (i.e. before the first
``import bastion.kernels``), so it is set here, at conftest import, ahead of every test module of
this directory.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import pytest
import torch

# The paged-batch builder and the float64 oracles are shared with tests/ops.
from ..helpers import paged_batches
from ..helpers.paged_batches import PagedBatch

# Set when bastion.kernels was imported (decorated) before this file could switch the interpreter on:
# its kernels would then need a GPU driver, so the Triton tests fail fast with this explanation.
LATE_INTERPRETER = None
if not torch.cuda.is_available():
    if "bastion.kernels" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        LATE_INTERPRETER = ("bastion.kernels was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1; "
                            "export TRITON_INTERPRET=1 (or set it in tests/conftest.py) and rerun")
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _kernels_decorated_for_this_machine(request: pytest.FixtureRequest) -> None:
    """Fail the Triton tests (only those) with the reason when the interpreter was switched on too late."""
    if LATE_INTERPRETER and request.path.name.startswith("test_triton"):
        pytest.fail(LATE_INTERPRETER)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: the GPU when there is one, else the CPU under the Triton interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def make_paged_batch(device: torch.device) -> Callable[..., PagedBatch]:
    """Factory for ``PagedBatch`` on the test device (see ``paged_batches.make_paged_batch``)."""
    return functools.partial(paged_batches.make_paged_batch, device=device)


@pytest.fixture
def attention_oracle() -> Callable[..., torch.Tensor]:
    """float64 reference attention of a ``PagedBatch``, gathered token by token (``paged_batches.attention_oracle``).

    Only the valid tokens of each sequence are gathered, so CANARY pages never reach the reference.
    """
    return paged_batches.attention_oracle


# Tolerances vs a float64 oracle: fp32 1e-5; fp16 inputs 2e-3; bf16 (8-bit mantissa, the
# GPU serving dtype) 2e-2.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture
def assert_close_to_oracle() -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Compare a kernel result with a float64 oracle at the tolerance of the kernel's dtype."""

    def check(actual: torch.Tensor, expected: torch.Tensor) -> None:
        tol = TOLERANCES[actual.dtype]
        torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)

    return check
