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
from dataclasses import dataclass

import pytest
import torch

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
    if LATE_INTERPRETER and request.node.module.__name__.startswith("test_triton"):
        pytest.fail(LATE_INTERPRETER)

NUM_KV_HEADS = 2
CANARY = 1234.5  # fills unused cache pages: a kernel reading one would be far off the reference


@dataclass
class PagedBatch:
    """A varlen batch over paged K/V caches, in the layout of the ops contract."""

    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor

    def args(self) -> tuple[torch.Tensor, ...]:
        """Positional arguments of ``paged_attention``."""
        return self.q, self.k_cache, self.v_cache, self.block_table, self.seq_lens, self.cu_seqlens_q


def build_paged_batch(q_lens: list[int], seq_lens: list[int], *, group: int, head_size: int, block_size: int,
                      dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu") -> PagedBatch:
    """Random queries and caches (built on the CPU, then moved to ``device``); each sequence's pages are a
    random permutation of the pool. Pages no sequence uses hold CANARY, and block-table padding points at
    page 0, so stray reads show.
    """
    gen = torch.Generator().manual_seed(seed)
    pages_per_seq = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(pages_per_seq) + 3
    shape = (num_blocks, block_size, NUM_KV_HEADS, head_size)
    k_cache = torch.full(shape, CANARY, dtype=dtype)
    v_cache = torch.full(shape, CANARY, dtype=dtype)
    order = torch.randperm(num_blocks - 1, generator=gen) + 1  # page 0 stays a canary page
    block_table = torch.zeros((len(seq_lens), max(pages_per_seq)), dtype=torch.int32)
    taken = 0
    for i, (n, pages) in enumerate(zip(seq_lens, pages_per_seq)):
        block_table[i, :pages] = order[taken:taken + pages].to(torch.int32)
        taken += pages
        for cache in (k_cache, v_cache):
            flat = cache[block_table[i, :pages].long()].reshape(-1, NUM_KV_HEADS, head_size)
            flat[:n] = torch.randn((n, NUM_KV_HEADS, head_size), generator=gen).to(dtype)
            cache[block_table[i, :pages].long()] = flat.view(pages, block_size, NUM_KV_HEADS, head_size)
    cu = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(q_lens).cumsum(0)
    q = torch.randn((int(cu[-1]), NUM_KV_HEADS * group, head_size), generator=gen).to(dtype)
    tensors = (q, k_cache, v_cache, block_table, torch.tensor(seq_lens, dtype=torch.int32), cu)
    return PagedBatch(*(t.to(device) for t in tensors))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: the GPU when there is one, else the CPU under the Triton interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def make_paged_batch(device: torch.device) -> Callable[..., PagedBatch]:
    """Factory for ``PagedBatch`` on the test device (see ``build_paged_batch``)."""
    return functools.partial(build_paged_batch, device=device)


@pytest.fixture
def attention_oracle() -> Callable[..., torch.Tensor]:
    """float64 reference attention of a ``PagedBatch`` (the torch backend fed float64 tensors).

    Only the valid tokens of each sequence are gathered, so CANARY pages never reach the reference.
    """
    from bastion.ops import torch_ref

    def oracle(batch: PagedBatch, sliding_window: int | None = None) -> torch.Tensor:
        return torch_ref.paged_attention(batch.q.double(), batch.k_cache.double(), batch.v_cache.double(),
                                         batch.block_table, batch.seq_lens, batch.cu_seqlens_q,
                                         sliding_window=sliding_window)

    return oracle


# Tolerances vs a float64 oracle (KERNELS.md D.2): fp32 1e-5; fp16 inputs 2e-3.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.fixture
def assert_close_to_oracle() -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Compare a kernel result with a float64 oracle at the tolerance of the kernel's dtype."""

    def check(actual: torch.Tensor, expected: torch.Tensor) -> None:
        tol = TOLERANCES[actual.dtype]
        torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)

    return check
