"""``bastion._core.cuda``: the CUDA kernels of csrc/cuda (csrc/bindings/cuda.cpp), all keyword-only.

``decode_plan`` is host arithmetic, present in every build. The two kernels exist only in a build with
CUDA (``bastion._core.with_cuda``; bastion.ops.cuda_backend checks it before touching them): they take
device pointers (``tensor.data_ptr()`` ints), strides in elements and the CUDA stream as an int
(``torch.cuda.current_stream().cuda_stream``), launch asynchronously, and raise ValueError for bad
arguments, RuntimeError when the launch fails.
"""

def decode_plan(
    *,
    num_seqs: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    sliding_window: int,
    num_sms: int,
) -> dict[str, int]:
    """Split-KV plan of the CUDA decode kernel: max_group, head_chunks, num_splits, split_tokens,
    workspace_bytes. Raises ValueError for shapes the kernel does not support."""

def paged_attention_decode(
    *,
    out: int,
    q: int,
    k_cache: int,
    v_cache: int,
    block_table: int,
    seq_lens: int,
    workspace: int,
    workspace_bytes: int,
    q_stride_token: int,
    q_stride_head: int,
    num_seqs: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    max_blocks_per_seq: int,
    sliding_window: int,
    num_sms: int,
    scale: float,
    dtype: str,
    stream: int,
) -> None:
    """Launch paged decode attention on device pointers (async on ``stream``); ``dtype`` is
    ``"float16"`` or ``"bfloat16"``, block_table and seq_lens int32. CUDA builds only."""

def reshape_and_cache(
    *,
    key: int,
    value: int,
    k_cache: int,
    v_cache: int,
    slot_mapping: int,
    key_stride_token: int,
    key_stride_head: int,
    value_stride_token: int,
    value_stride_head: int,
    num_slots: int,
    num_tokens: int,
    num_kv_heads: int,
    head_dim: int,
    elem_bytes: int,
    stream: int,
) -> None:
    """Launch the KV-cache write on device pointers (async on ``stream``); int64 slot_mapping, slots < 0
    are skipped. CUDA builds only."""
