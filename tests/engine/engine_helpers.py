"""Builders shared by the engine tests."""

from __future__ import annotations

import os
from typing import Any

import bastion


def async_engine(path: str | os.PathLike[str], *, num_kv_blocks: int = 256, max_model_len: int = 1024,
                 **kwargs: Any) -> bastion.AsyncLLM:
    """An ``AsyncLLM`` on the model file at ``path``: a small KV pool, so a leaked block shows, and a
    short context; ``kwargs`` go to ``AsyncLLM`` as they are."""
    return bastion.AsyncLLM(model=str(path), num_kv_blocks=num_kv_blocks, max_model_len=max_model_len, **kwargs)
