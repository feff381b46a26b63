"""Where the engine runs and how big its KV cache is: device, dtype, kernel backends, context length, block count."""

from __future__ import annotations

import torch

from bastion.config import EngineConfig
from bastion.model.llama import MODEL_OPS
from bastion.ops import dispatch


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" is float32 on the CPU (fastest GEMMs there) and bfloat16 on a GPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def plan_kernel_backends(name: str, device: torch.device, dtype: torch.dtype) -> tuple[dict[str, str], str]:
    """``(backends of the model's ops, backend of the sampler)`` for ``EngineConfig.kernel_backend`` ``name``.

    Ops the backend lacks go to "auto" (see ``bastion.ops.dispatch.plan``). Raises a ValueError naming
    ``kernel_backend`` and the reason when the backend is unavailable or cannot run on ``device``/``dtype``.
    """
    try:
        chosen = dispatch.plan(name, device.type, dict.fromkeys(MODEL_OPS, dtype) | {"sample": torch.float32})
    except ValueError as exc:
        raise ValueError(f"kernel_backend: {exc}") from None
    sample = chosen.pop("sample")
    return chosen, sample


def kv_bytes_per_block(model_config: object, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of K and V for one block across all layers."""
    mc = model_config
    per_token = 2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * torch.empty((), dtype=dtype).element_size()
    return per_token * block_size


def size_kv_cache(config: EngineConfig, model_config: object, model: torch.nn.Module) -> tuple[int, int]:
    """Return (max_model_len, num_kv_blocks), checking that one full-length request fits the pool."""
    native = int(model_config.max_position_embeddings)
    if config.max_model_len is not None and config.max_model_len > native:
        raise ValueError(f"max_model_len: {config.max_model_len} exceeds the model's context of {native} tokens")
    max_model_len = config.max_model_len or native
    if config.num_kv_blocks is not None:
        num_blocks = config.num_kv_blocks
    else:
        dtype = next(model.parameters()).dtype
        per_block = kv_bytes_per_block(model_config, config.block_size, dtype)
        num_blocks = max(2, config.kv_cache_memory_mb * (1 << 20) // per_block)
    capacity = num_blocks * config.block_size
    if capacity < max_model_len:
        if config.max_model_len is not None:
            raise ValueError(
                f"max_model_len: {max_model_len} tokens do not fit a KV cache of {num_blocks} blocks "
                f"x {config.block_size} tokens; raise kv_cache_memory_mb/num_kv_blocks or lower max_model_len"
            )
        max_model_len = capacity  # the model's own context is an upper bound, not a promise
    return max_model_len, num_blocks
