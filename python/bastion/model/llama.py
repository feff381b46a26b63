"""The Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) over a flat varlen batch and a paged KV cache.

Linears are ``nn.Linear`` (HF directories, GPU) or ``QuantizedLinear`` over a GGUF file's blocks (CPU,
see ``gguf_model``); every fused op (RMSNorm with residual, rotary, KV write, paged
attention, SiLU-and-mul) goes through ``bastion.ops`` so the same module runs on CPU and GPU with the
fastest backend of each, or with the backends ``LlamaForCausalLM.set_ops_backends`` names (the engine's
``kernel_backend``). Q/K/V and gate/up projections are stored fused (see ``bastion.model.fuse``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from bastion import ops
from bastion.errors import ModelLoadError
from bastion.model.attention_metadata import AttentionMetadata
from bastion.model.config import ModelConfig
from bastion.model.rope import build_cos_sin_cache

KVCache = tuple[torch.Tensor, torch.Tensor]
RopeTables = tuple[torch.Tensor, torch.Tensor]
# the bastion.ops calls of the forward pass (the keys of set_ops_backends)
MODEL_OPS: tuple[str, ...] = ("rms_norm", "rotary_embedding", "reshape_and_cache", "paged_attention", "silu_and_mul")


def rope_tables(cos_sin_cache: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype) -> RopeTables:
    """``(cos, sin)`` of shape ``[T, 1, rot_dim/2]`` for this step's positions, gathered once for all layers."""
    cos, sin = cos_sin_cache.index_select(0, positions).to(dtype).unsqueeze(1).chunk(2, dim=-1)
    return cos, sin


def rotate_neox_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Neox rotary of ``x [T, H, D]`` in place (pairs ``(i, i + rot_dim/2)``; dims past rot_dim untouched).

    Six elementwise ops per call instead of the gather + chunk + cat of the generic op: on the CPU
    the per-layer overhead of rotary is otherwise as large as the attention itself at decode.
    """
    half = cos.shape[-1]
    x1, x2 = x[..., :half], x[..., half:2 * half]
    x1_sin, x2_sin = x1 * sin, x2 * sin
    x1.mul_(cos).sub_(x2_sin)
    x2.mul_(cos).add_(x1_sin)


class RMSNorm(nn.Module):
    """RMSNorm whose optional residual add is fused into the same op."""

    backend: str = "auto"  # of ops.rms_norm; see LlamaForCausalLM.set_ops_backends

    def __init__(self, hidden_size: int, eps: float) -> None:
        """A unit weight of ``hidden_size``; ``eps`` guards the reciprocal square root."""
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``norm(x)``, or ``(norm(x + residual), x + residual)`` when given the residual stream."""
        return ops.rms_norm(x, self.weight, self.eps, residual=residual, backend=self.backend)


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with fused QKV, neox rotary and paged K/V."""

    # backends of ops.rotary_embedding / reshape_and_cache / paged_attention; see LlamaForCausalLM.set_ops_backends
    rotary_backend: str = "auto"
    cache_backend: str = "auto"
    attn_backend: str = "auto"

    def __init__(self, config: ModelConfig) -> None:
        """Allocate the projections for ``config`` (weights are assigned at load)."""
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj: nn.Module = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias)
        self.o_proj: nn.Module = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.scale = self.head_dim**-0.5
        self.sliding_window = config.sliding_window

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                attn: AttentionMetadata, kv_cache: KVCache, rope: RopeTables | None = None) -> torch.Tensor:
        """``x [T, hidden]`` -> attention output ``[T, hidden]``; writes this step's K/V into ``kv_cache``.

        With ``rope`` (see ``rope_tables``) q and k are rotated in place in the QKV output instead of
        through ``ops.rotary_embedding``.
        """
        tokens = x.shape[0]
        qkv = self.qkv_proj(x)
        if rope is not None:
            qk = qkv[:, :self.q_size + self.kv_size].view(tokens, self.num_heads + self.num_kv_heads, self.head_dim)
            rotate_neox_(qk, *rope)
        q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        if rope is None:
            q, k = ops.rotary_embedding(positions, q, k, cos_sin_cache, is_neox=True, backend=self.rotary_backend)
        k_cache, v_cache = kv_cache
        ops.reshape_and_cache(k, v, k_cache, v_cache, attn.slot_mapping, backend=self.cache_backend)
        out = ops.paged_attention(q, k_cache, v_cache, attn.block_table, attn.seq_lens, attn.cu_seqlens_q,
                                  scale=self.scale, sliding_window=self.sliding_window, backend=self.attn_backend)
        return self.o_proj(out.reshape(tokens, self.q_size))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward with a fused gate/up projection."""

    backend: str = "auto"  # of ops.silu_and_mul; see LlamaForCausalLM.set_ops_backends

    def __init__(self, config: ModelConfig) -> None:
        """Allocate the projections for ``config``."""
        super().__init__()
        self.gate_up_proj: nn.Module = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj: nn.Module = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``down(silu(gate(x)) * up(x))``."""
        return self.down_proj(ops.silu_and_mul(self.gate_up_proj(x), backend=self.backend))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block; the residual add is fused into the next RMSNorm."""

    def __init__(self, config: ModelConfig) -> None:
        """Allocate attention, MLP and the two norm weights."""
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, positions: torch.Tensor,
                cos_sin_cache: torch.Tensor, attn: AttentionMetadata,
                kv_cache: KVCache, rope: RopeTables | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(block output, residual stream)``; their sum is the layer's hidden state."""
        if residual is None:  # first layer: the embeddings are the residual stream
            residual = hidden
            x = self.input_layernorm(hidden)
        else:
            x, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(x, positions, cos_sin_cache, attn, kv_cache, rope)
        x, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    """The ``CausalLM`` of the model contract: ``forward`` over a flat batch, ``compute_logits`` on chosen rows."""

    ops_backends: Mapping[str, str] = dict.fromkeys(MODEL_OPS, "auto")  # set by set_ops_backends
    rope_in_place: bool = True  # CPU fp32 rotary by rotate_neox_ while rotary is left to "auto"
    cos_sin_cache: torch.Tensor  # a non-persistent buffer, registered in __init__

    def __init__(self, config: ModelConfig) -> None:
        """Allocate every layer for ``config``; build on the meta device and use ``from_state_dict`` to load."""
        super().__init__()
        self.config = config
        # an explicit (uninitialised) weight skips nn.Embedding's random init, which allocates the whole
        # table even on the meta device; the loader assigns the real weight
        self.embed_tokens: nn.Module = nn.Embedding(config.vocab_size, config.hidden_size,
                                                    _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head: nn.Module | None = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer("cos_sin_cache", torch.empty(0), persistent=False)

    @classmethod
    def from_state_dict(cls, config: ModelConfig, weights: Mapping[str, torch.Tensor], *,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
        """Build the model around fused ``weights`` (see ``fuse_hf_state_dict``), without copying them
        when they already have ``dtype`` and ``device`` (memory-mapped cache tensors stay mapped)."""
        with torch.device("meta"):
            model = cls(config)
        params = {name: t.to(device, dtype) for name, t in weights.items()}
        try:
            model.load_state_dict(params, strict=True, assign=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights do not fit the {config.architecture} architecture: {exc}") from exc
        model.cos_sin_cache = build_cos_sin_cache(config.max_position_embeddings, config.head_dim, config.rope_theta,
                                                  config.rope_scaling, dtype=torch.float32, device=device)
        return model.eval().requires_grad_(False)

    def set_ops_backends(self, backends: Mapping[str, str]) -> None:
        """Pass ``backends[op]`` as ``backend=`` to every ``bastion.ops`` call of ``op`` (ops not named: "auto").

        Stored on each layer once, so a call costs no more than before. Unless rotary is left to
        "auto", the CPU fp32 in-place rotary shortcut is off and rotary goes through ``ops.rotary_embedding``.
        """
        unknown = set(backends) - set(MODEL_OPS)
        if unknown:
            raise ValueError(f"set_ops_backends: unknown ops {sorted(unknown)}; the model calls {', '.join(MODEL_OPS)}")
        chosen = {op: backends.get(op, "auto") for op in MODEL_OPS}
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.backend = chosen["rms_norm"]
            elif isinstance(module, LlamaAttention):
                module.rotary_backend = chosen["rotary_embedding"]
                module.cache_backend = chosen["reshape_and_cache"]
                module.attn_backend = chosen["paged_attention"]
            elif isinstance(module, LlamaMLP):
                module.backend = chosen["silu_and_mul"]
        self.ops_backends = chosen
        self.rope_in_place = chosen["rotary_embedding"] == "auto"

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the activations (and of the weights not kept as GGUF blocks)."""
        return self.norm.weight.dtype

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttentionMetadata,
                kv_caches: Sequence[KVCache]) -> torch.Tensor:
        """Hidden states ``[T, hidden]`` of a flat varlen batch (``input_ids``/``positions`` int64 ``[T]``)."""
        if len(kv_caches) != len(self.layers):
            raise ValueError(f"kv_caches has {len(kv_caches)} layers, the model has {len(self.layers)}")
        hidden = self.embed_tokens(input_ids)
        residual: torch.Tensor | None = None
        # CPU fp32 under "auto" rotary: gather cos/sin once per step and rotate in place (GPU backends fuse
        # rotary already; a named rotary backend must not be bypassed)
        rope = (rope_tables(self.cos_sin_cache, positions, hidden.dtype)
                if self.rope_in_place and hidden.device.type == "cpu" and hidden.dtype == torch.float32 else None)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(hidden, residual, positions, self.cos_sin_cache, attn, kv_cache, rope)
        out, _ = self.norm(hidden, residual)  # config validation guarantees >= 1 layer, so residual is set
        return out

    @torch.inference_mode()
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits ``[S, vocab]`` of the selected hidden rows ``[S, hidden]``."""
        if self.lm_head is not None:  # its own weight, or a GGUF file's (tied) blocks as a QuantizedLinear
            return self.lm_head(hidden).float()
        # tied head without a lm_head: embed_tokens is the nn.Embedding (GGUF models always set lm_head)
        return F.linear(hidden, cast(torch.Tensor, self.embed_tokens.weight)).float()

    def make_kv_caches(self, num_blocks: int, block_size: int, dtype: torch.dtype | None = None) -> list[KVCache]:
        """Zeroed paged K/V caches of ``dtype`` (default: the model's), one ``(k, v)`` pair of
        ``[num_blocks, block_size, kv_heads, head_dim]`` per layer."""
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks} and {block_size}")
        shape = (num_blocks, block_size, self.config.num_kv_heads, self.config.head_dim)
        dtype = dtype or self.dtype
        return [(torch.zeros(shape, dtype=dtype, device=self.device),
                 torch.zeros(shape, dtype=dtype, device=self.device)) for _ in self.layers]
