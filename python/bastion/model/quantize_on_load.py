"""GGUF blocks for weights a model file stores unquantized (HF directories, F16/BF16/F32 GGUFs).

The one-call CPU decoder (``cpu_decoder``) and the module path's small steps run on GGUF blocks;
a model without any has only torch's fp32 GEMV for single-stream decode (~7x slower on SmolLM2).
``quantize_model`` rounds each projection without blocks to a GGUF type with gguf-py's own
quantizer (``EngineConfig.quantize_weights``): Q8_0 keeps 8 bits per weight with a scale per 32
(~0.6 % relative error of a matmul, measured on tiny random models). The fp32 weights stay and
still serve prefill and big batches.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from bastion.model.quant_weights import KERNEL_TYPES, QuantizedWeight, QuantPart

# the types gguf-py can quantize to (the K-quants it can only read)
QUANTIZE_TYPES: tuple[str, ...] = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")


def _blocks(weight: torch.Tensor, qtype: str) -> QuantizedWeight:
    import gguf
    from gguf.quants import quantize

    rows = quantize(weight.detach().float().contiguous().numpy(), gguf.GGMLQuantizationType[qtype])
    return QuantizedWeight((QuantPart(torch.from_numpy(rows), KERNEL_TYPES[qtype]),))


def quantize_model(model: nn.Module, qtype: str) -> int:
    """Attach ``qtype`` blocks to every projection of ``model`` that has none (and to the output
    projection); returns how many were quantized. Rows whose length is not a multiple of 32 are left."""
    if qtype not in QUANTIZE_TYPES:
        raise ValueError(f"quantize_weights: {qtype!r} is not one of {', '.join(QUANTIZE_TYPES)}")
    targets: list[tuple[nn.Module | None, nn.Linear | nn.Embedding]] = []
    for layer in model.layers:
        for linear in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
            if "quantized" not in linear.__dict__:
                targets.append((None, linear))
    if "lm_head_quantized" not in model.__dict__:
        targets.append((model, model.embed_tokens if model.lm_head is None else model.lm_head))
    done = 0
    for owner, module in tqdm(targets, desc=f"quantizing weights to {qtype}", unit="matrix", leave=False):
        if module.weight.shape[1] % 32:
            continue
        if owner is None:
            module.quantized = _blocks(module.weight, qtype)
        else:
            owner.lm_head_quantized = _blocks(module.weight, qtype)
        done += 1
    return done
