"""Fixtures of the model tests: one thread per process and transformers' reference SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from .model_helpers import transformers_from_gguf


@pytest.fixture(scope="session", autouse=True)
def single_thread() -> Iterator[None]:
    """Run model tests on one thread: on a shared 2-core box, OpenMP spin-waits of a second thread
    competing with other processes made each op ~100x slower in our measurements."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_path: Path) -> torch.nn.Module:
    """transformers' fp32 SmolLM2 dequantized by transformers from the same GGUF (built once per session)."""
    return transformers_from_gguf(smollm2_path)
