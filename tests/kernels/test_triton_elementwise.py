"""RMSNorm (+ residual), RoPE (NeoX / GPT-J, partial) and SiLU-and-mul against float64 references."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from bastion import kernels
from bastion import ops as bops
from bastion.ops import torch_ref

# bf16 too: these kernels only load, cast and store it (no tl.dot), which the interpreter does exactly
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _randn(*shape: int, dtype: torch.dtype, seed: int, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 300, 5000])  # 5000 > one 4096-column block: exercises the loop
def test_rms_norm_matches_float64(dtype, hidden, assert_close_to_oracle, device):
    x, w = _randn(3, hidden, dtype=dtype, seed=0, device=device), _randn(hidden, dtype=dtype, seed=1, device=device)
    out = kernels.rms_norm(x, w, 1e-6)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close_to_oracle(out, torch_ref.rms_norm(x.double(), w.double(), 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_residual_rms_norm_returns_the_new_residual_and_leaves_inputs_alone(dtype, assert_close_to_oracle, device):
    x, w, res = (_randn(2, 3, 300, dtype=dtype, seed=2, device=device), _randn(300, dtype=dtype, seed=3, device=device),
                 _randn(2, 3, 300, dtype=dtype, seed=4, device=device))
    x_before, res_before = x.clone(), res.clone()
    out, new_residual = kernels.rms_norm(x, w, 1e-5, res)
    ref_out, ref_residual = torch_ref.rms_norm(x.double(), w.double(), 1e-5, res.double())
    assert_close_to_oracle(out, ref_out)
    assert_close_to_oracle(new_residual, ref_residual)
    assert torch.equal(x, x_before) and torch.equal(res, res_before)


def _cos_sin_cache(max_pos: int, rot_dim: int, device: torch.device) -> torch.Tensor:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    freqs = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(device)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rot_dim", [96, 32], ids=["full", "partial"])
def test_rotary_embedding_matches_float64(is_neox, dtype, rot_dim, assert_close_to_oracle, device):
    positions = torch.tensor([0, 7, 63, 1, 40], device=device)
    q, k = _randn(5, 8, 96, dtype=dtype, seed=5, device=device), _randn(5, 2, 96, dtype=dtype, seed=6, device=device)
    cache = _cos_sin_cache(64, rot_dim, device)
    ref_q, ref_k = torch_ref.rotary_embedding(positions, q.double(), k.double(), cache, is_neox)
    out_q, out_k = kernels.rotary_embedding(positions, q.clone(), k.clone(), cache.float(), is_neox)
    assert_close_to_oracle(out_q, ref_q)
    assert_close_to_oracle(out_k, ref_k)
    if rot_dim < 96:
        assert torch.equal(out_q[..., rot_dim:], q[..., rot_dim:])  # pass-through dims untouched


def test_rotary_neox_and_gptj_pair_different_dims(device):
    positions = torch.tensor([5], device=device)
    q = _randn(1, 1, 8, dtype=torch.float32, seed=7, device=device)
    cache = _cos_sin_cache(8, 8, device).float()
    neox, _ = kernels.rotary_embedding(positions, q.clone(), q.clone(), cache, True)
    gptj, _ = kernels.rotary_embedding(positions, q.clone(), q.clone(), cache, False)
    assert not torch.allclose(neox, gptj)
    # position 0 is the identity rotation for both
    same, _ = kernels.rotary_embedding(torch.tensor([0], device=device), q.clone(), q.clone(), cache, False)
    torch.testing.assert_close(same, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 2 * 80), (2, 3, 2 * 1500)])  # 1500 > one 1024-wide block
def test_silu_and_mul_matches_float64(dtype, shape, assert_close_to_oracle, device):
    x = _randn(*shape, dtype=dtype, seed=8, device=device)
    out = kernels.silu_and_mul(x)
    assert out.shape == (*shape[:-1], shape[-1] // 2)
    assert_close_to_oracle(out, torch_ref.silu_and_mul(x.double()))


def test_ops_layer_triton_backend_matches_torch_backend(device):
    x, w, res = _randn(4, 128, dtype=torch.float32, seed=9, device=device), _randn(128, dtype=torch.float32, seed=10, device=device), \
        _randn(4, 128, dtype=torch.float32, seed=11, device=device)
    for a, b in zip(bops.rms_norm(x, w, 1e-6, res, backend="triton"), bops.rms_norm(x, w, 1e-6, res, backend="torch")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bops.silu_and_mul(x, backend="triton"), bops.silu_and_mul(x, backend="torch"))
    positions, cache = torch.tensor([3, 9], device=device), _cos_sin_cache(16, 64, device).float()
    q, k = _randn(2, 4, 64, dtype=torch.float32, seed=12, device=device), _randn(2, 2, 64, dtype=torch.float32, seed=13, device=device)
    expected = bops.rotary_embedding(positions, q.clone(), k.clone(), cache, False, backend="torch")
    actual = bops.rotary_embedding(positions, q.clone(), k.clone(), cache, False, backend="triton")
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_triton_backend_rejects_bad_input():
    from bastion.ops import triton_backend

    with pytest.raises(ValueError, match="last dim must be even"):
        triton_backend.silu_and_mul(torch.ones(2, 3))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        triton_backend.rms_norm(torch.ones(2, 4), torch.ones(4), -1.0)
    with pytest.raises(ValueError, match="contiguous last dim"):
        triton_backend.rms_norm(torch.ones(4, 2).t(), torch.ones(4), 1e-6)
    with pytest.raises(ValueError, match="supports float16, bfloat16 and float32"):
        triton_backend.silu_and_mul(torch.ones(2, 4, dtype=torch.float64))
    assert triton_backend.supports("rms_norm", torch.bfloat16)
    assert not triton_backend.supports("rms_norm", torch.float64)  # "auto" must not pick triton for fp64


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only, interpreter-off error")
def test_cpu_tensors_without_the_interpreter_get_a_clear_error():
    script = ("import torch, bastion.ops as o\n"
              "try:\n    o.silu_and_mul(torch.ones(2, 4), backend='triton')\n"
              "except ValueError as e:\n    print('ERROR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "ERROR the triton backend needs CUDA tensors" in proc.stdout, proc.stdout + proc.stderr[-2000:]
