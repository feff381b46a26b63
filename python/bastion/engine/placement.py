"""Where the engine runs and how its memory is spent: device, kernel backends, KV dtype, the memory budget
that weights and KV cache share, context length and block count."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from bastion.config import EngineConfig
from bastion.model.config import ModelConfig
from bastion.model.llama import MODEL_OPS
from bastion.model.loader import ModelFootprint
from bastion.ops import dispatch


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


# the sampler's ops: the draw and the structured-output mask
SAMPLER_OPS = ("sample", "apply_token_bitmask")


def plan_kernel_backends(name: str, device: torch.device, dtype: torch.dtype
                         ) -> tuple[dict[str, str], dict[str, str]]:
    """``(backends of the model's ops, backends of the sampler's ops)`` for ``EngineConfig.kernel_backend``
    ``name``; the sampler's are keyed by ``SAMPLER_OPS`` (its logits are float32) and go to "auto" when the
    backend serves none of them.

    Ops the backend lacks go to "auto" (see ``bastion.ops.dispatch.plan``). Raises a ValueError naming
    ``kernel_backend`` and the reason when the backend is unavailable or cannot run on ``device``/``dtype``.
    """
    try:
        model = dispatch.plan(name, device.type, dict.fromkeys(MODEL_OPS, dtype))
    except ValueError as exc:
        raise ValueError(f"kernel_backend: {exc}") from None
    try:
        sampler = dispatch.plan(name, device.type, dict.fromkeys(SAMPLER_OPS, torch.float32))
    except ValueError:  # the backend runs here (the model's plan says so) but has none of the sampler's ops
        sampler = dict.fromkeys(SAMPLER_OPS, "auto")
    return model, sampler


# torch dtypes of EngineConfig.kv_cache_dtype
_KV_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_kv_dtype(name: str, device: torch.device, model_dtype: torch.dtype, ops_backends: dict[str, str]) -> torch.dtype:
    """The KV cache's dtype: "auto" is fp16 on the CPU where the C++ (or torch) kernels write and read the
    cache (half the bytes of fp32), else the model's dtype. A cache dtype other than the model's is refused,
    naming ``kv_cache_dtype``, when the chosen attention backend (Triton, CUDA) cannot read it."""
    mixed_ok = device.type == "cpu" and all(ops_backends.get(op, "auto") in ("auto", "cpu", "torch")
                                            for op in ("paged_attention", "reshape_and_cache"))
    if name == "auto":
        return torch.float16 if mixed_ok and model_dtype == torch.float32 else model_dtype
    dtype = _KV_DTYPES[name]
    if dtype != model_dtype and not mixed_ok:
        raise ValueError(f"kv_cache_dtype: {name} caches with {str(model_dtype).removeprefix('torch.')} activations "
                         "are read only by the cpu and torch kernel backends on the CPU")
    return dtype


def kv_bytes_per_block(model_config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of K and V for one block across all layers."""
    mc = model_config
    per_token = 2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * torch.empty((), dtype=dtype).element_size()
    return per_token * block_size


def available_memory_bytes(device: torch.device) -> int:
    """Memory a new engine may take: free GPU memory on CUDA, else the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@dataclass(frozen=True)
class MemoryPlan:
    """How the engine's memory budget is spent: the weights, then the KV cache."""

    budget_bytes: int
    weight_bytes: int
    kv_dtype: torch.dtype
    num_blocks: int
    max_model_len: int
    block_bytes: int  # of K and V across all layers, per block

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV cache."""
        return self.num_blocks * self.block_bytes


def plan_memory(config: EngineConfig, footprint: ModelFootprint, kv_dtype: torch.dtype,
                device: torch.device) -> MemoryPlan:
    """Size the KV cache inside the budget that the weights share, before any weight is read.

    The budget is ``memory_budget_mb``, or 90 % of the memory available now. The cache gets
    ``num_kv_blocks``, or ``kv_cache_memory_mb`` shrunk to what the budget leaves after the weights.
    Raises ValueError naming the sizes when the weights plus the smallest usable cache (one request of
    ``max_model_len`` tokens, or two blocks) exceed the budget, or ``max_model_len`` exceeds the model's
    context or the cache.
    """
    mc = footprint.config
    native = int(mc.max_position_embeddings)
    if config.max_model_len is not None and config.max_model_len > native:
        raise ValueError(f"max_model_len: {config.max_model_len} exceeds the model's context of {native} tokens")
    budget = (config.memory_budget_mb << 20 if config.memory_budget_mb is not None
              else int(available_memory_bytes(device) * 0.9))
    per_block = kv_bytes_per_block(mc, config.block_size, kv_dtype)
    min_blocks = max(2, -(-(config.max_model_len or 0) // config.block_size))
    if footprint.weight_bytes + min_blocks * per_block > budget:
        raise ValueError(
            f"memory_budget_mb: the model needs {footprint.weight_bytes / 2**20:.0f} MiB of weights plus at least "
            f"{min_blocks * per_block / 2**20:.0f} MiB of KV cache, more than the budget of {budget / 2**20:.0f} MiB"
            f"{'' if config.memory_budget_mb is not None else ' (90 % of the memory available now)'}; "
            "use a smaller or more quantized model, a shorter max_model_len, or a larger memory_budget_mb")
    if config.num_kv_blocks is not None:
        num_blocks = config.num_kv_blocks
    else:
        kv_budget = min(config.kv_cache_memory_mb << 20, budget - footprint.weight_bytes)
        num_blocks = max(min_blocks, kv_budget // per_block)
    max_model_len = config.max_model_len or native
    capacity = num_blocks * config.block_size
    if capacity < max_model_len:
        if config.max_model_len is not None:
            raise ValueError(
                f"max_model_len: {max_model_len} tokens do not fit a KV cache of {num_blocks} blocks "
                f"x {config.block_size} tokens; raise kv_cache_memory_mb/num_kv_blocks or lower max_model_len"
            )
        max_model_len = capacity  # the model's own context is an upper bound, not a promise
    return MemoryPlan(budget, footprint.weight_bytes, kv_dtype, num_blocks, max_model_len, per_block)
