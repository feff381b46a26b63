"""bastion: an embeddable, high-performance LLM inference runtime for Python services.

Heavy submodules (torch, the model) load lazily on first use, so ``import bastion`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from bastion.errors import (
    BastionError,
    EngineDead,
    GuardrailViolation,
    ModelLoadError,
    Overloaded,
    PromptTooLong,
    RateLimited,
)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "EngineConfig": "bastion.config",  # its choices come from the ops and model code: it pulls in torch
    "LLM": "bastion.engine.llm",
    "AsyncLLM": "bastion.engine.async_llm",
    "Deadlines": "bastion.engine.request",
    "SamplingParams": "bastion.sampling.params",
    "StructuredOutputsParams": "bastion.sampling.structured_params",
    "RequestOutput": "bastion.engine.outputs",
    "RequestMetrics": "bastion.engine.outputs",
    "Gateway": "bastion.gateway.gateway",
    "OpenAIBackend": "bastion.gateway.openai_backend",
    "AuditLog": "bastion.audit.log",
    "CircuitBreaker": "bastion.resilience.breaker",
}

__all__ = [
    "BastionError", "EngineConfig", "EngineDead", "GuardrailViolation", "ModelLoadError", "Overloaded",
    "PromptTooLong", "RateLimited", "cuda_available", *_LAZY,
]


def cuda_available() -> bool:
    """True when the native core was built with CUDA kernels, torch sees a GPU, and the kernels were
    compiled for that GPU's architecture (``bastion._core.cuda_archs``; sm_90a by default)."""
    from bastion import _core

    if not getattr(_core, "with_cuda", False):
        return False
    count = getattr(_core, "cuda_device_count", None)
    if not (count and count() > 0):
        return False
    import torch

    from bastion.ops.cuda_archs import runs_on

    return torch.cuda.is_available() and runs_on(torch.cuda.get_device_capability(), _core.cuda_archs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
