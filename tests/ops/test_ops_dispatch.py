"""Backend registry: "auto" resolution, explicit backends, clear errors, custom registration."""

from __future__ import annotations

import bastion.ops as ops
import pytest
import torch
from bastion.ops import cpu_backend, dispatch, torch_ref


def test_auto_picks_cpu_kernels_for_fp32_and_torch_otherwise() -> None:
    x = torch.randn(2, 8)
    assert dispatch.resolve("paged_attention", "auto", x) is cpu_backend.paged_attention
    assert dispatch.resolve("rms_norm", "auto", x) is cpu_backend.rms_norm
    assert dispatch.resolve("paged_attention", "auto", x.double()) is torch_ref.paged_attention
    assert dispatch.resolve("sample", "auto", x) is torch_ref.sample  # no C++ sampler: torch it is
    assert dispatch.resolve("rotary_embedding", "auto", x) is torch_ref.rotary_embedding


def test_unknown_backend_and_missing_op_are_value_errors() -> None:
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        ops.silu_and_mul(x, backend="tpu")
    with pytest.raises(ValueError, match="backend 'cpu' does not implement op 'sample'"):
        ops.sample(x, 0.0, 0, 1.0, 0.0, backend="cpu")
    with pytest.raises(ValueError, match="unknown op"):
        ops.register("torch", "flash_decode", torch_ref.silu_and_mul)


def test_unavailable_backend_reports_why() -> None:
    status = ops.available_backends()
    assert status["torch"] == "available" and status["cpu"] == "available"
    missing = [name for name, why in status.items() if why != "available"]
    for name in missing:
        with pytest.raises(ValueError, match=f"backend '{name}' is not available"):
            ops.silu_and_mul(torch.randn(2, 8), backend=name)


def test_register_custom_backend_function() -> None:
    calls: list[tuple[int, ...]] = []

    def traced_silu_and_mul(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch_ref.silu_and_mul(x)

    ops.register("traced", "silu_and_mul", traced_silu_and_mul)
    out = ops.silu_and_mul(torch.ones(3, 4), backend="traced")
    assert calls == [(3, 4)] and out.shape == (3, 2)


def test_thread_setting() -> None:
    assert cpu_backend.num_threads() == torch.get_num_threads()
    cpu_backend.set_num_threads(1)
    try:
        assert cpu_backend.num_threads() == 1
    finally:
        cpu_backend.set_num_threads(None)
    with pytest.raises(ValueError, match="num_threads"):
        cpu_backend.set_num_threads(0)


def test_auto_falls_back_when_a_backend_declines_the_arguments() -> None:
    """A backend raising Unsupported (e.g. decode-only attention given a prefill) hands the call on."""
    from bastion.ops import dispatch

    calls: list[str] = []

    def picky(x: torch.Tensor) -> torch.Tensor:
        calls.append("picky")
        raise dispatch.Unsupported("picky: only even-length rows")

    def general(x: torch.Tensor) -> torch.Tensor:
        calls.append("general")
        return x * 2

    chained = dispatch._first_that_serves([picky, general])
    assert torch.equal(chained(torch.ones(3)), torch.full((3,), 2.0))
    assert calls == ["picky", "general"]
    assert dispatch._first_that_serves([general]) is general
