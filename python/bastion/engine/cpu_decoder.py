"""The decoder of a GGUF-quantized Llama as one C++ call for small fp32 CPU steps.

Single-stream decode on the module-by-module path spends ~40 % of each token in Python: about ten
``bastion.ops`` calls per layer, each a few microseconds of wrapper around microseconds of work.
``CpuDecoder`` hands the C++ ``DecoderProgram`` raw pointers to the same weights (the GGUF blocks
of each ``QuantizedLinear``), norm weights and KV caches once, then runs every layer of a step in one
call with the same kernels that back the modules' small steps and the ``cpu`` ops backend. It plays
the part CUDA graphs play on a GPU: same math, no per-op launch cost. Steps larger than ``max_tokens``
(long prefills, big batches) keep the module path, where each ``QuantizedLinear`` dequantizes panels
for torch's GEMM (see ``quant_linear.kernel_max_tokens``). The embedding lookup stays in torch; the
caller computes logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from bastion.model.attention_metadata import AttentionMetadata
from bastion.model.llama import KVCache, LlamaDecoderLayer, LlamaForCausalLM
from bastion.model.quant_linear import QuantizedLinear

if TYPE_CHECKING:
    from bastion._core.cpu import DecoderProgram


def _linear(module: nn.Module) -> tuple[list[tuple[int, int, int]], int, int] | None:
    """``([(blocks ptr, ggml type, rows) per part], cols, bias ptr or 0)`` of a linear on GGUF blocks the
    block kernel reads, else None."""
    if not isinstance(module, QuantizedLinear) or not all(p.on_kernel for p in module.parts):
        return None
    bias = 0 if module.bias is None else module.bias.data_ptr()
    return [(p.blocks.data_ptr(), p.ggml_type, p.rows) for p in module.parts], module.in_features, bias


class CpuDecoder:
    """``forward(input_ids, positions, attn)`` of a ``LlamaForCausalLM`` as one native call (see module doc)."""

    def __init__(self, model: LlamaForCausalLM, kv_caches: Sequence[KVCache], program: DecoderProgram,
                 max_tokens: int, threads: int) -> None:
        """Use ``create``; this keeps the tensors the program points into alive."""
        self.model = model
        self.kv_caches = list(kv_caches)  # the program holds raw pointers into these
        self.program = program
        self.max_tokens = max_tokens
        self.threads = threads
        self._scratch = torch.empty(program.scratch_floats(max_tokens), dtype=torch.float32)

    @classmethod
    def create(cls, model: nn.Module, kv_caches: Sequence[KVCache], *, max_tokens: int, threads: int,
               activation_bits: int) -> CpuDecoder | None:
        """A decoder for ``model``, or None when it cannot serve it: not an fp32 CPU Llama, ops given to a
        backend other than the C++ kernels (``kernel_backend``), some linear without GGUF blocks, a bias
        outside QKV, non-contiguous caches, or no native core."""
        if (not isinstance(model, LlamaForCausalLM) or model.device.type != "cpu" or model.dtype != torch.float32
                or max_tokens < 1 or not set(model.ops_backends.values()) <= {"auto", "cpu"}):
            return None
        try:
            from bastion import _core
        except ImportError:
            return None
        config = model.config
        rotary_dim = model.cos_sin_cache.shape[-1]
        program = _core.cpu.DecoderProgram(
            hidden=config.hidden_size, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim, intermediate=config.intermediate_size, rotary_half=rotary_dim // 2,
            block_size=kv_caches[0][0].shape[1], num_blocks=kv_caches[0][0].shape[0], eps=config.rms_norm_eps,
            scale=config.head_dim**-0.5, sliding_window=config.sliding_window or 0,
            final_norm=model.norm.weight.data_ptr(), activation_bits=activation_bits,
            kv_fp16=kv_caches[0][0].dtype == torch.float16)
        layers = cast(Iterable[LlamaDecoderLayer], model.layers)  # what LlamaForCausalLM.__init__ builds
        for layer, (k_cache, v_cache) in zip(layers, kv_caches, strict=True):
            attn, mlp = layer.self_attn, layer.mlp
            qkv, o, gate_up, down = (_linear(m) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj))
            if (qkv is None or o is None or gate_up is None or down is None
                    or not (k_cache.is_contiguous() and v_cache.is_contiguous())):
                return None
            try:
                program.add_layer(layer.input_layernorm.weight.data_ptr(), layer.post_attention_layernorm.weight.data_ptr(),
                                  qkv, o, gate_up, down, k_cache.data_ptr(), v_cache.data_ptr())
            except ValueError:  # a bias on o/gate_up/down, or shapes the program does not handle
                return None
        return cls(model, kv_caches, program, max_tokens, threads)

    def applies(self, num_tokens: int) -> bool:
        """Whether a step of ``num_tokens`` tokens should run here rather than through the modules."""
        return 0 < num_tokens <= self.max_tokens

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionMetadata) -> torch.Tensor:
        """Final-normed hidden states ``[T, hidden]``, as ``LlamaForCausalLM.forward``; writes this step's K/V."""
        tokens = input_ids.shape[0]
        if not self.applies(tokens):
            raise ValueError(f"CpuDecoder serves steps of 1..{self.max_tokens} tokens, got {tokens}")
        hidden = self.model.embed_tokens(input_ids).contiguous()
        cos, sin = self.model.cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
        cos, sin = cos.contiguous(), sin.contiguous()
        slots = attn.slot_mapping.to(torch.int64).contiguous()
        table = attn.block_table.to(torch.int32).contiguous()
        lens = attn.seq_lens.to(torch.int32).contiguous()
        cu = attn.cu_seqlens_q.to(torch.int32).contiguous()
        self.program.run(hidden.data_ptr(), self._scratch.data_ptr(), tokens, cos.data_ptr(), sin.data_ptr(),
                         slots.data_ptr(), table.data_ptr(), table.shape[1], lens.data_ptr(), cu.data_ptr(),
                         lens.shape[0], self.threads)
        return hidden
