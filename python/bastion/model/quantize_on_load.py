"""GGUF blocks for weights a model file stores unquantized (HF directories, F16/BF16/F32 GGUFs).

Single-stream decode reads every weight once per token, so the bytes per weight set its speed: a
model without blocks runs torch's fp32 GEMV or the F16 panel path (~7x slower on SmolLM2).
``quantize_model`` rounds each such projection to a GGUF type with gguf-py's own quantizer
(``EngineConfig.quantize_weights``) and puts a ``QuantizedLinear`` in its place: Q8_0 keeps 8 bits
per weight with a scale per 32 (~0.6 % relative error of a matmul, measured on tiny random models).
The unquantized weights are dropped (the embedding table stays, for the lookup).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, cast, get_args

import torch
from torch import nn
from tqdm.auto import tqdm

from bastion.model.quant_linear import KERNEL_TYPES, QuantizedLinear, QuantPart, dequantize_part

if TYPE_CHECKING:
    from bastion.model.llama import LlamaDecoderLayer, LlamaForCausalLM

# the types gguf-py can quantize to (the K-quants it can only read)
QuantizeType = Literal["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]
QUANTIZE_TYPES: tuple[str, ...] = get_args(QuantizeType)


def _blocks(weight: torch.Tensor, qtype: str) -> QuantPart:
    import gguf
    from gguf.quants import quantize

    rows = quantize(weight.detach().float().contiguous().numpy(), gguf.GGMLQuantizationType[qtype])
    return QuantPart(torch.from_numpy(rows), KERNEL_TYPES[qtype])


def _dense(module: nn.Module) -> torch.Tensor | None:
    """The fp32 weight of a linear without GGUF blocks the kernel reads, else None."""
    if isinstance(module, nn.Linear):
        return module.weight
    if isinstance(module, QuantizedLinear) and not all(p.on_kernel for p in module.parts):
        return torch.cat([dequantize_part(p) for p in module.parts])
    return None


def quantize_model(model: LlamaForCausalLM, qtype: str) -> int:
    """Replace every projection of ``model`` that lacks kernel blocks (and the output head) by a
    ``QuantizedLinear`` of ``qtype`` blocks; returns how many were replaced. Rows whose length is
    not a multiple of 32 are left as they are."""
    if qtype not in QUANTIZE_TYPES:
        raise ValueError(f"quantize_weights: {qtype!r} is not one of {', '.join(QUANTIZE_TYPES)}")
    targets: list[tuple[nn.Module, str, nn.Module]] = []
    for layer in cast("Iterable[LlamaDecoderLayer]", model.layers):  # what LlamaForCausalLM.__init__ builds
        for parent, name in ((layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"), (layer.mlp, "gate_up_proj"),
                             (layer.mlp, "down_proj")):
            targets.append((parent, name, getattr(parent, name)))
    head = model.lm_head if model.lm_head is not None else model.embed_tokens
    targets.append((model, "lm_head", head))
    done = 0
    for owner, name, module in tqdm(targets, desc=f"quantizing weights to {qtype}", unit="matrix", leave=False):
        weight = module.weight if isinstance(module, nn.Embedding) else _dense(module)
        if weight is None or weight.shape[1] % 32:
            continue
        bias = getattr(module, "bias", None)
        setattr(owner, name, QuantizedLinear(weight.shape[1], weight.shape[0], (_blocks(weight, qtype),),
                                             None if bias is None else bias.detach()))
        done += 1
    return done
