"""The quantized-block matmul (``cpu_backend.quant_matmul``) against the dequantized fp32 matmul.

The weights go through gguf's own quantizer (or, for the K-quants it cannot produce, random block
bytes with sane fp16 scales) and gguf's dequantizer, so block layout and nibble order are checked
against the reference implementation, not against our reading of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bastion.ops import cpu_backend

gguf = pytest.importorskip("gguf")
from bastion.model.quant_linear import KERNEL_TYPES as TYPES  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from ..helpers.gguf_builder import K_QUANT_SCALE_BYTES, random_blocks  # noqa: E402


def _quantized(qtype: str, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(blocks uint8 [n, bytes], dequantized fp32 [n, k])`` of a random weight."""
    gtype = gguf.GGMLQuantizationType[qtype]
    if gtype in K_QUANT_SCALE_BYTES:
        blocks = random_blocks(gtype, n, k, seed, scales=(0.001, 0.02))
    else:
        rng = np.random.default_rng(seed)
        blocks = np.ascontiguousarray(quantize(rng.standard_normal((n, k)).astype(np.float32), gtype))
    return torch.from_numpy(blocks), torch.from_numpy(dequantize(blocks, gtype).reshape(n, k).copy())


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 13])
@pytest.mark.parametrize(("n", "k"), [(40, 256), (192, 768), (576, 1536)])
def test_matches_dequantized_matmul(qtype: str, m: int, n: int, k: int) -> None:
    blocks, dense = _quantized(qtype, n, k, seed=m * 1000 + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    got = cpu_backend.quant_matmul(x, blocks, TYPES[qtype], n)
    ref = x.double() @ dense.double().T
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4 * k**0.5)


def _int16_rows(x: torch.Tensor) -> torch.Tensor:
    """x rounded the way activation_bits=16 rounds it: per 32 values, scale max|x| / 32767 (AVX2's int16
    kernel) or / 32639 (VNNI: two int8 planes, see quant_i8_kernel.inc), nearest (ties to even)."""
    from bastion._core import cpu

    top = 32767 if cpu.quant_isa() == "avx2" else 32639
    blocks = x.double().reshape(x.shape[0], -1, 32)
    scale = (blocks.abs().amax(-1, keepdim=True).float() / top).double()  # the kernel keeps the scale in fp32
    q = torch.where(scale > 0, torch.round((blocks.float() * (1 / scale.float())).double()), torch.zeros_like(blocks))
    return (q * scale).reshape(x.shape)


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("m", [1, 3, 4, 5, 8])
@pytest.mark.parametrize(("n", "k"), [(40, 256), (576, 1536)])
def test_int16_activations_match_rounded_x(qtype: str, m: int, n: int, k: int) -> None:
    """With int16 activations the result is the float64 matmul of the rounded x and the dequantized W."""
    blocks, dense = _quantized(qtype, n, k, seed=m * 77 + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + 100))
    x[0, :32] = 0.0  # an all-zero block: scale 0, no division by zero
    x[1 % m, 40:50] = 300.0  # an outlier block: its other values keep 15 bits of the largest
    got = cpu_backend.quant_matmul(x, blocks, TYPES[qtype], n, activation_bits=16)
    ref = _int16_rows(x) @ dense.double().T
    # fp32 sums of large K-quant weights; the VNNI path adds a bias term (Q6_K's -32) in float, which
    # costs fp32 rounding of the outlier block's products (|y| ~ 3e4) even where they cancel
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4 * k**0.5 + 4e-6 * float(ref.abs().max()))
    exact = x.double() @ dense.double().T
    assert float((got.double() - exact).norm() / exact.norm()) < 1e-4  # the rounding itself (measured ~2e-5)


@pytest.mark.parametrize("bits", [32, 16])
def test_out_fills_a_column_range_of_a_wider_output(bits: int) -> None:
    """Parts of a fused projection write their own columns of one output (row stride = full width)."""
    parts = [_quantized("Q4_K", 24, 256, seed=1), _quantized("Q6_K", 16, 256, seed=2)]
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(4))
    out = torch.full((3, 40), float("nan"))
    first = 0
    for blocks, dense in parts:
        cpu_backend.quant_matmul(x, blocks, TYPES["Q4_K" if first == 0 else "Q6_K"], dense.shape[0],
                                 activation_bits=bits, out=out[:, first:first + dense.shape[0]])
        first += dense.shape[0]
    ref = x.double() @ torch.cat([d for _, d in parts]).double().T
    assert float((out.double() - ref).norm() / ref.norm()) < (1e-4 if bits == 16 else 1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_the_result(threads: int) -> None:
    blocks, _ = _quantized("Q4_1", 100, 96, seed=7)
    x = torch.randn(3, 96)
    cpu_backend.set_num_threads(1)
    try:
        one = cpu_backend.quant_matmul(x, blocks, 3, 100)
        cpu_backend.set_num_threads(threads)
        assert torch.equal(cpu_backend.quant_matmul(x, blocks, 3, 100), one)  # each row is summed alike
    finally:
        cpu_backend.set_num_threads(None)


def test_rejects_bad_arguments() -> None:
    blocks, _ = _quantized("Q8_0", 8, 64, seed=1)
    with pytest.raises(ValueError, match="unsupported ggml type"):
        cpu_backend.quant_matmul(torch.randn(1, 64), blocks, 99, 8)  # no such ggml type
    with pytest.raises(ValueError, match="multiple of 32"):
        cpu_backend.quant_matmul(torch.randn(1, 48), blocks, 8, 8)
    with pytest.raises(ValueError, match="multiple of 256"):
        cpu_backend.quant_matmul(torch.randn(1, 64), blocks, 12, 8)  # Q4_K rows hold 256-weight blocks
    with pytest.raises(ValueError, match="out must be"):
        cpu_backend.quant_matmul(torch.randn(1, 64), blocks, 8, 8, out=torch.empty(1, 9))
    with pytest.raises(ValueError, match="uint8"):
        cpu_backend.quant_matmul(torch.randn(1, 64), blocks.float(), 8, 8)
    with pytest.raises(ValueError, match="activation_bits"):
        cpu_backend.quant_matmul(torch.randn(1, 64), blocks, 8, 8, activation_bits=4)
    with pytest.raises(ValueError, match="float32"):
        cpu_backend.quant_matmul(torch.randn(1, 64, dtype=torch.float64), blocks, 8, 8)


def test_model_blocks_equal_the_dequantized_weights() -> None:
    """Every linear of the block model (q/k unpermuted, QKV and gate/up as parts of one layer) computes
    what the dequantized model's fp32 linear does, on the kernel and on the panel path."""
    from bastion.model import load_model
    from bastion.model.quant_linear import configure, quantized_linears

    blocks = load_model(None)
    dense = load_model(None, dequantize=True)
    assert len(quantized_linears(blocks.model)) == 4 * blocks.config.num_layers + 1
    assert quantized_linears(dense.model) == []
    configure(blocks.model, max_tokens=2)
    for name, module in blocks.model.named_modules():
        if not name.endswith("_proj") and name != "lm_head":
            continue
        weight = dense.model.embed_tokens.weight if name == "lm_head" else dense.model.get_submodule(name).weight
        for rows in (2, 5):  # the block kernel, then the panels
            x = torch.randn(rows, weight.shape[1])
            torch.testing.assert_close(module(x), x @ weight.T, rtol=1e-4, atol=1e-4)
