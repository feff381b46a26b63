"""Sampling: request parameters, the batched sampler, penalties, logprobs and structured-output masks.

Detokenizing and stop checks are output processing: ``bastion.engine.output_processor``.

``import bastion.sampling`` stays light: the torch-based pieces load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from bastion.sampling.params import SamplingParams
from bastion.sampling.structured_params import StructuredOutputsParams

# public name -> module that defines it (imported on first access, since they pull in torch)
_LAZY = {
    "Sampler": "bastion.sampling.sampler",
    "SamplerOutput": "bastion.sampling.sampler",
    "SequenceState": "bastion.sampling.state",
    "TokenCounts": "bastion.sampling.token_counts",
    "TokenLogprobs": "bastion.sampling.logprobs",
    "TokenBitmask": "bastion.sampling.token_bitmask",
}

__all__ = ["SamplingParams", "StructuredOutputsParams", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a lazily exported name on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion.sampling' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
