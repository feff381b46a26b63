"""Turns one scheduler step (flat numpy arrays) into one forward pass and the logits to sample.

The arrays come straight from the C++ scheduler's preallocated buffers; ``torch.from_numpy``
wraps them without a copy on the CPU, so no per-request Python work happens here. On a GPU, pure
decode steps replay CUDA graphs (``bastion.engine.cuda_graphs``) unless ``config.enforce_eager``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bastion.config import EngineConfig
from bastion.engine.cpu_decoder import CpuDecoder
from bastion.engine.cuda_graphs import CudaGraphRunner
from bastion.model import AttentionMetadata, LoadedModel
from bastion.model.quant_linear import bf16_gemm_is_fast, configure, kernel_max_tokens, quantized_linears

if TYPE_CHECKING:
    import numpy as np

    from bastion import _core


class ModelRunner:
    """Owns the paged KV caches of one model and runs the flat varlen batch through it."""

    def __init__(self, loaded: LoadedModel, num_blocks: int, block_size: int, device: torch.device,
                 *, config: EngineConfig | None = None, kv_dtype: torch.dtype | None = None) -> None:
        """``config`` enables CUDA graphs on a CUDA device (sized by ``max_num_seqs``), or the one-call
        C++ decoder for small steps of a GGUF-quantized model on the CPU, unless ``enforce_eager``;
        without a config the runner stays eager and exact, as it cannot know either. ``kv_dtype`` (default:
        the model's dtype) is the KV cache's."""
        self.model = loaded.model
        self.device = device
        self.kv_caches = self.model.make_kv_caches(num_blocks, block_size, kv_dtype)
        self.graphs: CudaGraphRunner | None = None
        self.cpu_decoder: CpuDecoder | None = None
        if config is None or config.enforce_eager:
            return
        if device.type == "cuda":
            self.graphs = CudaGraphRunner.create(self.model, self.kv_caches, config.max_num_seqs, device)
        elif device.type == "cpu":
            threads = config.num_threads or torch.get_num_threads()
            panel_dtype = getattr(torch, config.gemm_dtype)
            if panel_dtype == torch.bfloat16 and not bf16_gemm_is_fast():
                raise ValueError("gemm_dtype: bfloat16 needs a CPU that multiplies it natively (AVX512-BF16 or "
                                 "AMX); this one would emulate it, slower than float32")
            max_tokens = (kernel_max_tokens(threads, panel_dtype) if config.block_kernel_max_tokens is None
                          else config.block_kernel_max_tokens)
            configure(self.model, activation_bits=config.activation_bits, max_tokens=max_tokens,
                      panel_dtype=panel_dtype)
            self.cpu_decoder = CpuDecoder.create(self.model, self.kv_caches, max_tokens=max_tokens,
                                                 threads=threads, activation_bits=config.activation_bits)

    def numerics(self) -> str:
        """How this runner computes, for audit records: device, dtype, kernel backends, and on the CPU
        the GGUF block types, the steps they serve and the activation precision."""
        backends = sorted(set(getattr(self.model, "ops_backends", {}).values())) or ["auto"]
        parts = [f"{self.device.type} {str(self.model.dtype).removeprefix('torch.')}",
                 f"kernel_backend {'/'.join(backends)}"]
        linears = quantized_linears(self.model)
        if linears:
            types = sorted({part.type_name for linear in linears for part in linear.parts})
            bits = {linear.activation_bits for linear in linears}
            steps = max(linear.max_tokens for linear in linears)
            panels = {str(linear.panel_dtype).removeprefix("torch.") for linear in linears}
            parts.append(f"GGUF blocks {'+'.join(types)}: block kernel for steps <= {steps} tokens "
                         f"(activations {'int16' if bits == {16} else 'fp32'}), "
                         f"dequantized {'/'.join(sorted(panels))} panels beyond")
        if self.cpu_decoder is not None:
            parts.append("one-call C++ decoder")
        if self.graphs is not None:
            parts.append("CUDA graphs")
        return "; ".join(parts)

    def _tensor(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        t = torch.from_numpy(array)
        if t.dtype != dtype:
            t = t.to(dtype)
        return t.to(self.device, non_blocking=True) if self.device.type != "cpu" else t

    @torch.inference_mode()
    def execute(self, step: _core.StepOutput) -> torch.Tensor:
        """Run the step's tokens through the model; return float32 logits [num_sampling, vocab]."""
        hidden = self.graphs.run(step) if self.graphs is not None and self.graphs.can_run(step) else None
        if hidden is None:
            hidden = self._forward_eager(step)
        if len(step.logits_indices) == 0:
            return hidden.new_empty((0, 0), dtype=torch.float32)
        # graph outputs carry padded rows past the step's; logits_indices only names real ones
        rows = hidden.index_select(0, self._tensor(step.logits_indices, torch.int64))
        return self.model.compute_logits(rows).float()

    def _forward_eager(self, step: _core.StepOutput) -> torch.Tensor:
        num_scheduled = step.num_scheduled_tokens
        seq_lens = step.seq_lens
        attn = AttentionMetadata(
            slot_mapping=self._tensor(step.slot_mapping, torch.int64),
            block_table=self._tensor(step.block_table, torch.int32),
            seq_lens=self._tensor(seq_lens, torch.int32),
            cu_seqlens_q=self._tensor(step.cu_seqlens_q, torch.int32),
            max_seqlen_q=int(num_scheduled.max()),
            max_seq_len=int(seq_lens.max()),
        )
        input_ids = self._tensor(step.input_ids, torch.int64)
        positions = self._tensor(step.positions, torch.int64)
        if self.cpu_decoder is not None and self.cpu_decoder.applies(input_ids.shape[0]):
            return self.cpu_decoder.forward(input_ids, positions, attn)
        return self.model.forward(input_ids, positions, attn, self.kv_caches)
