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
