"""rms_norm, rotary_embedding and silu_and_mul against float64 oracles written from their formulas."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch

from ..helpers.paged_batches import cos_sin_cache, rope_oracle

TOL = {"atol": 2e-5, "rtol": 2e-5}


def _rms_oracle(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w.double()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_rms_norm(backend: str, rows: int) -> None:
    x, w = torch.randn(rows, 576), torch.randn(576)
    x_before = x.clone()
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5, backend=backend).double(), _rms_oracle(x, w, 1e-5), **TOL)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_rms_norm_fused_residual(backend: str) -> None:
    x, residual, w = torch.randn(2, 5, 100), torch.randn(2, 5, 100), torch.randn(100)
    residual_before = residual.clone()
    out, new_residual = ops.rms_norm(x, w, 1e-6, residual=residual, backend=backend)
    summed = x.double() + residual.double()
    torch.testing.assert_close(new_residual.double(), summed, **TOL)
    torch.testing.assert_close(out.double(), _rms_oracle(summed, w, 1e-6), **TOL)
    assert torch.equal(residual, residual_before), "the input residual is not modified"


def test_rms_norm_half_precision_torch() -> None:
    x, w = torch.randn(4, 64).half(), torch.randn(64).half()
    out = ops.rms_norm(x, w, 1e-5)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), _rms_oracle(x, w, 1e-5), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rot_dim", [64, 32])  # 32 < head_dim: partial rotary leaves the tail alone
def test_rotary_embedding(is_neox: bool, rot_dim: int) -> None:
    cache, inv_freq = cos_sin_cache(512, rot_dim)
    positions = torch.tensor([0, 1, 7, 300, 511])
    q, k = torch.randn(5, 9, 64), torch.randn(5, 3, 64)
    q_out, k_out = ops.rotary_embedding(positions, q.clone(), k.clone(), cache, is_neox)
    torch.testing.assert_close(q_out.double(), rope_oracle(q, positions, inv_freq, is_neox), **TOL)
    torch.testing.assert_close(k_out.double(), rope_oracle(k, positions, inv_freq, is_neox), **TOL)
    torch.testing.assert_close(q_out[0], q[0])  # position 0 is the identity rotation


def test_neox_and_gptj_differ() -> None:
    cache, _ = cos_sin_cache(16, 8)
    q, k, positions = torch.randn(3, 2, 8), torch.randn(3, 1, 8), torch.tensor([3, 4, 5])
    neox, _ = ops.rotary_embedding(positions, q.clone(), k.clone(), cache, True)
    gptj, _ = ops.rotary_embedding(positions, q.clone(), k.clone(), cache, False)
    assert not torch.allclose(neox, gptj)


def test_rotary_rejects_bad_shapes() -> None:
    cache, _ = cos_sin_cache(16, 8)
    with pytest.raises(ValueError, match="rot_dim 8 must be even and <= head_dim 4"):
        ops.rotary_embedding(torch.tensor([1]), torch.randn(1, 2, 4), torch.randn(1, 1, 4), cache)
    with pytest.raises(ValueError, match="num_tokens"):
        ops.rotary_embedding(torch.tensor([1, 2]), torch.randn(1, 2, 8), torch.randn(1, 1, 8), cache)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("shape", [(1, 2 * 1536), (5, 2 * 13), (2, 3, 2 * 40)])
def test_silu_and_mul(backend: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape) * 4
    d = shape[-1] // 2
    expected = x[..., :d].double() * torch.sigmoid(x[..., :d].double()) * x[..., d:].double()
    out = ops.silu_and_mul(x, backend=backend)
    assert out.shape == (*shape[:-1], d)
    torch.testing.assert_close(out.double(), expected, **TOL)


def test_silu_and_mul_rejects_odd_width() -> None:
    with pytest.raises(ValueError, match="even"):
        ops.silu_and_mul(torch.randn(2, 5))
