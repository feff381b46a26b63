"""Argument handling of the ``cuda`` ops backend. Needs a CUDA build of bastion (BASTION_CUDA=ON) but no
GPU: every case here is rejected before anything is launched."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from bastion import _core

pytestmark = pytest.mark.skipif(not _core.with_cuda, reason="bastion._core built without CUDA (BASTION_CUDA=OFF)")


@pytest.fixture(scope="module")
def cuda_backend():
    """The backend module (imported only in CUDA builds, where it can be)."""
    from bastion.ops import cuda_backend

    return cuda_backend


def decode_inputs(num_tokens: int, num_seqs: int, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, ...]:
    """CPU tensors shaped like a decode call: q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q."""
    cache = torch.zeros(4, 16, 2, 128, dtype=dtype)
    return (
        torch.zeros(num_tokens, 8, 128, dtype=dtype), cache, cache.clone(),
        torch.zeros(num_seqs, 2, dtype=torch.int32), torch.ones(num_seqs, dtype=torch.int32),
        torch.arange(num_seqs + 1, dtype=torch.int32),
    )


def test_prefill_batch_is_refused_so_dispatch_can_fall_back(cuda_backend) -> None:
    with pytest.raises(ValueError, match="decode only"):
        cuda_backend.paged_attention(*decode_inputs(num_tokens=5, num_seqs=2))


def test_fp32_attention_is_refused(cuda_backend) -> None:
    with pytest.raises(ValueError, match="float16 or all bfloat16"):
        cuda_backend.paged_attention(*decode_inputs(num_tokens=2, num_seqs=2, dtype=torch.float32))


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 8, 96, 2), "head_dim must be 64 or 128"), ((70000, 1, 64, 1), "65535")],
    ids=["head_dim_96", "too_many_seqs"],
)
def test_shapes_the_kernel_lacks_are_unsupported_so_auto_uses_triton(cuda_backend, shape, message: str) -> None:
    """Not a plain ValueError: under backend="auto" that would fail every decode step of such a model."""
    from bastion.ops.dispatch import Unsupported

    num_seqs, num_heads, head_dim, num_kv_heads = shape
    cache = torch.zeros(2, 16, num_kv_heads, head_dim, dtype=torch.bfloat16)
    args = (torch.zeros(num_seqs, num_heads, head_dim, dtype=torch.bfloat16), cache, cache.clone(),
            torch.zeros(num_seqs, 1, dtype=torch.int32), torch.ones(num_seqs, dtype=torch.int32),
            torch.arange(num_seqs + 1, dtype=torch.int32))
    with pytest.raises(Unsupported, match=message):
        cuda_backend.paged_attention(*args)


def test_unsupported_dtypes_and_cache_layouts_are_unsupported(cuda_backend) -> None:
    from bastion.ops.dispatch import Unsupported

    with pytest.raises(Unsupported, match="float16 or all bfloat16"):
        cuda_backend.paged_attention(*decode_inputs(num_tokens=2, num_seqs=2, dtype=torch.float32))
    q, k_cache, v_cache, *rest = decode_inputs(num_tokens=2, num_seqs=2)
    strided = torch.zeros(4, 2, 16, 128, dtype=torch.bfloat16).transpose(1, 2)  # [blocks, block_size, heads, D], HND
    with pytest.raises(Unsupported, match="contiguous"):
        cuda_backend.paged_attention(q, strided, strided, *rest)


def test_vector_rows_copies_a_misaligned_contiguous_view(cuda_backend) -> None:
    flat = torch.arange(1 + 2 * 8 * 64, dtype=torch.float16)
    misaligned = flat[1:].view(2, 8, 64)  # contiguous, but 2 bytes past a 16-byte boundary
    assert misaligned.is_contiguous() and misaligned.data_ptr() % 16
    fixed = cuda_backend._vector_rows(misaligned)
    assert fixed.data_ptr() % 16 == 0 and torch.equal(fixed, misaligned)
    aligned = flat[8:8 + 8 * 64].view(1, 8, 64)
    assert cuda_backend._vector_rows(aligned) is aligned  # already loadable: no copy


def test_cpu_tensors_are_refused(cuda_backend) -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_backend.paged_attention(*decode_inputs(num_tokens=2, num_seqs=2))


def test_cache_write_rejects_mixed_dtypes(cuda_backend) -> None:
    key = torch.zeros(3, 2, 128, dtype=torch.float16)
    cache = torch.zeros(4, 16, 2, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="one dtype"):
        cuda_backend.reshape_and_cache(key, key, cache, cache.clone(), torch.zeros(3, dtype=torch.int64))


def test_cache_write_rejects_cpu_tensors(cuda_backend) -> None:
    key = torch.zeros(3, 2, 128, dtype=torch.float16)
    cache = torch.zeros(4, 16, 2, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_backend.reshape_and_cache(key, key, cache, cache.clone(), torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize(
    ("op", "dtype", "expected"),
    [
        ("paged_attention", torch.bfloat16, True),
        ("paged_attention", torch.float16, True),
        ("paged_attention", torch.float32, False),
        ("reshape_and_cache", torch.float32, True),
        ("rms_norm", torch.bfloat16, False),
    ],
)
def test_supports_advertises_only_implemented_ops(cuda_backend, op: str, dtype: torch.dtype, expected: bool) -> None:
    assert cuda_backend.supports(op, dtype) is expected


def test_no_gpu_means_not_available_even_in_a_cuda_build() -> None:
    import bastion

    assert bastion.cuda_available() == (_core.cuda_device_count() > 0)


@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd not available")
def test_extension_links_neither_cudart_nor_the_driver_dynamically() -> None:
    """Static cudart and no libcuda: the module must import on hosts without a driver."""
    libs = subprocess.run(["ldd", _core.__file__], capture_output=True, text=True, check=True).stdout
    assert "libcudart" not in libs, libs
    assert "libcuda.so" not in libs, libs


def test_cache_rows_of_partial_vectors_are_unsupported_so_auto_uses_triton(cuda_backend) -> None:
    """head_dim 4 in bf16 is 8 bytes: the kernel moves 16-byte vectors, so it declines (before any device check)."""
    from bastion.ops.dispatch import Unsupported

    key = torch.zeros(3, 2, 4, dtype=torch.bfloat16)
    cache = torch.zeros(4, 16, 2, 4, dtype=torch.bfloat16)
    assert "reshape_and_cache" in cuda_backend.PARTIAL_OPS
    with pytest.raises(Unsupported, match="16-byte"):
        cuda_backend.reshape_and_cache(key, key, cache, cache.clone(), torch.zeros(3, dtype=torch.int64))
