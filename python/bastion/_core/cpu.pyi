"""``bastion._core.cpu``: the C++/OpenMP CPU kernels of csrc/cpu (csrc/bindings/cpu.cpp).

Every tensor is passed as its ``tensor.data_ptr()`` int (0 = none where allowed), strides in elements;
the callers (bastion.ops.cpu_backend, bastion.model.quant_linear, bastion.engine.cpu_decoder) have
checked dtype (fp32 activations; fp32 or fp16 caches), device and innermost-dim contiguity. The
kernels release the GIL. Only DecoderProgram's constructor takes (keyword-only) arguments by name;
the other parameters are positional-only (the bindings give them no names).
"""

from collections.abc import Sequence
from typing import TypedDict

import numpy.typing as npt

def paged_attention(
    q: int,
    q_stride_token: int,
    q_stride_head: int,
    out: int,
    out_stride_token: int,
    out_stride_head: int,
    k_cache: int,
    k_stride_block: int,
    k_stride_slot: int,
    k_stride_head: int,
    v_cache: int,
    v_stride_block: int,
    v_stride_slot: int,
    v_stride_head: int,
    block_table: int,
    block_table_stride: int,
    seq_lens: int,
    cu_seqlens_q: int,
    num_tokens: int,
    num_seqs: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    num_blocks: int,
    scale: float,
    sliding_window: int,
    threads: int,
    kv_fp16: bool,
    /,
) -> None:
    """Paged attention of fp32 q over fp32 (or, kv_fp16, fp16) NHD caches into fp32 out.

    block_table, seq_lens and cu_seqlens_q point at int32 data.
    """

def reshape_and_cache(
    key: int,
    key_stride_token: int,
    key_stride_head: int,
    value: int,
    value_stride_token: int,
    value_stride_head: int,
    k_cache: int,
    k_stride_block: int,
    k_stride_slot: int,
    k_stride_head: int,
    v_cache: int,
    v_stride_block: int,
    v_stride_slot: int,
    v_stride_head: int,
    slot_mapping: int,
    num_tokens: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    num_blocks: int,
    threads: int,
    kv_fp16: bool,
    /,
) -> None:
    """Write fp32 K/V rows into their cache slots (int64 slot_mapping, -1 = skip), as fp16 when kv_fp16."""

def rms_norm(
    x: int,
    weight: int,
    residual_in: int,
    residual_out: int,
    out: int,
    rows: int,
    hidden: int,
    eps: float,
    threads: int,
    /,
) -> None:
    """RMSNorm of contiguous fp32 rows; with residual_in (0 = none), residual_out = x + residual_in is
    normalised."""

def silu_and_mul(x: int, out: int, rows: int, d: int, threads: int, /) -> None:
    """silu(x[:, :d]) * x[:, d:] for contiguous fp32 x [rows, 2d]."""

def apply_token_bitmask(
    logits: int,
    row_stride: int,
    bitmask: int,
    num_words: int,
    indices: int,
    num_rows: int,
    vocab: int,
    threads: int,
    /,
) -> None:
    """-inf into the fp32 logits rows indices[r] (int64; 0 = rows 0..num_rows-1) wherever bitmask row r
    (contiguous int32, num_words per row) has a 0 bit; columns past 32 * num_words too."""

def quant_matmul(
    x: int,
    w: int,
    y: int,
    M: int,
    N: int,
    K: int,
    ggml_type: int,
    threads: int,
    activation_bits: int,
    ldy: int,
    /,
    isa: str = "auto",
) -> None:
    """y[M, N] = x[M, K] @ W^T for fp32 x/y and W rows of GGUF blocks.

    ggml types 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 10 Q2_K, 11 Q3_K, 12 Q4_K, 13 Q5_K, 14 Q6_K;
    y rows are ldy apart (0 = N); activation_bits 16 / 8 round x per 32 values to int16 / int8 first
    (integer dot products), 32 keeps fp32. ``isa`` picks the integer paths' instruction set ("auto" =
    ``quant_isa()``, "avx2", "avxvnni", "avx512vnni"). ValueError for an unsupported type, K not a
    multiple of the type's block, 0 < ldy < N, or an isa this CPU cannot run.
    """

def quant_isa() -> str:
    """The instruction set quant_matmul's integer paths use now: avx2, avxvnni or avx512vnni."""

def detected_quant_isa() -> str:
    """The best instruction set of quant_matmul's integer paths this CPU runs."""

def set_quant_isa(name: str, /) -> str:
    """Force the instruction set of quant_matmul and the decoder program for the whole process (tests,
    benchmarks); "auto" goes back to BASTION_QUANT_ISA or the detected one. Returns the previous active one."""

def dequantize_rows(
    w: int,
    ggml_type: int,
    K: int,
    rows: int,
    first: int,
    num_rows: int,
    out: int,
    bf16_out: bool,
    threads: int,
    /,
) -> None:
    """out[r] = row rows[r] of W [N, K] stored as ggml type ggml_type, as fp32 or (bf16_out) bf16.

    ``rows`` points at int64 row ids (0 = rows first, first + 1, ...); F32, F16, BF16 and the
    quant_matmul types are read. ValueError for another type or a K that is not a multiple of its block.
    """

class _AttentionPlan(TypedDict):
    # (seq, kv_head_begin, kv_head_end, q_begin, q_end, kv_begin, kv_end, partial); partial -1 = output
    items: list[tuple[int, int, int, int, int, int, int, int]]
    num_merges: int
    num_partials: int

def attention_plan(
    seq_lens: npt.ArrayLike,
    cu_seqlens_q: npt.ArrayLike,
    num_kv_heads: int,
    group_size: int,
    sliding_window: int,
    threads: int,
    /,
) -> _AttentionPlan:
    """The work items paged_attention would run (arrays cast to int32; cu_seqlens_q: num_seqs + 1 entries)."""

# A quantized linear of DecoderProgram.add_layer: ([(blocks pointer, ggml_type, rows), ...] (1 to 3
# parts, stacked by rows), cols, bias pointer or 0); a tuple, its parts any sequence.
_Linear = tuple[Sequence[tuple[int, int, int]], int, int]

class DecoderProgram:
    """The whole Llama decoder for small fp32 CPU steps as one call (see csrc/cpu/decoder_program.h)."""

    def __init__(
        self,
        *,
        hidden: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        intermediate: int,
        rotary_half: int,
        block_size: int,
        num_blocks: int,
        eps: float,
        scale: float,
        sliding_window: int,
        final_norm: int,
        activation_bits: int,
        kv_fp16: bool = False,
    ) -> None:
        """``final_norm``: the final RMSNorm weight (pointer); ``activation_bits``: 32, 16 or 8."""
    def add_layer(
        self,
        input_norm: int,
        post_norm: int,
        qkv: _Linear,
        o: _Linear,
        gate_up: _Linear,
        down: _Linear,
        k_cache: int,
        v_cache: int,
        /,
    ) -> None:
        """Append a layer: norm weights, four linears, contiguous K/V caches (fp16 when kv_fp16)."""
    def scratch_floats(self, num_tokens: int, /) -> int:
        """Scratch floats a step of this many tokens needs."""
    @property
    def num_layers(self) -> int: ...
    def run(
        self,
        hidden: int,
        scratch: int,
        num_tokens: int,
        cos: int,
        sin: int,
        slot_mapping: int,
        block_table: int,
        max_blocks_per_seq: int,
        seq_lens: int,
        cu_seqlens_q: int,
        num_seqs: int,
        threads: int,
        /,
    ) -> None:
        """Embeddings in hidden [num_tokens, hidden] -> final-normed hidden states; writes the step's K/V.

        ``scratch`` holds scratch_floats(num_tokens) floats; slot_mapping is int64, block_table,
        seq_lens and cu_seqlens_q int32. Releases the GIL.
        """
