"""``QuantizedLinear`` / ``QuantizedEmbedding`` against an fp64 oracle: gguf-py's dequantized weight.

Every GGUF type bastion runs, batch sizes that take the block kernel (M <= 8 here) and the panel
GEMM (M > 8), N with a tail past any vector width and K of an odd number of blocks. The measured
worst relative errors (fp64 product as the reference, ``pytest -s`` prints them) are the figures
bench/README.md quotes per type.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from bastion.model.quant_linear import (
    FLOAT_TYPES,
    KERNEL_TYPES,
    QuantizedEmbedding,
    QuantizedLinear,
    QuantPart,
    dequantize_part,
)
from gguf.quants import dequantize, quantize

from ..helpers.gguf_builder import K_QUANT_SCALE_BYTES, random_blocks

TYPES = list(KERNEL_TYPES) + list(FLOAT_TYPES)
N = 197  # a tail past every vector width and row chunk


def _weight(qtype: str, k: int, seed: int) -> tuple[QuantPart, torch.Tensor]:
    """A random ``[N, k]`` weight of ``qtype`` and its fp64 dequantized form (gguf-py's reader)."""
    gtype = gguf.GGMLQuantizationType[qtype]
    rng = np.random.default_rng(seed)
    if gtype in K_QUANT_SCALE_BYTES:
        raw = random_blocks(gtype, N, k, seed, scales=(0.001, 0.02))
    elif qtype == "F32":
        raw = rng.standard_normal((N, k)).astype(np.float32)
    elif qtype == "F16":
        halves = rng.standard_normal((N, k)).astype(np.float16)
        raw, dense = halves.view(np.uint8), halves
    else:
        raw = np.ascontiguousarray(quantize(rng.standard_normal((N, k)).astype(np.float32), gtype))
    if qtype not in ("F32", "F16"):
        dense = dequantize(raw, gtype)
        raw = raw.view(np.uint8)
    elif qtype == "F32":
        dense = raw
    return QuantPart(torch.from_numpy(raw), int(gtype)), torch.from_numpy(np.asarray(dense, np.float64).reshape(N, k))


def _k(qtype: str) -> int:
    """An odd number of blocks: 3 K-quant blocks of 256, or 7 blocks of 32."""
    return 768 if qtype.endswith("_K") else 224


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_rows_is_gguf_exactly(qtype: str) -> None:
    part, dense = _weight(qtype, _k(qtype), seed=1)
    assert torch.equal(dequantize_part(part).double(), dense)
    assert torch.equal(dequantize_part(part, 5, 9).double(), dense[5:14])
    bf16 = dequantize_part(part, dtype=torch.bfloat16)
    assert torch.equal(bf16, dense.float().to(torch.bfloat16))  # rounded to nearest even, as torch does


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("bits", [32, 16])
def test_linear_matches_the_fp64_dequantized_product(qtype: str, bits: int) -> None:
    """M in {1, 2, 7} on the block kernel (quantized types), {16, 33, 128} on the panel GEMM; bias added.
    bits 32: exact fp32 everywhere; 16: int16 activations in the kernel and bf16 panels."""
    k = _k(qtype)
    part, dense = _weight(qtype, k, seed=2)
    bias = torch.randn(N, generator=torch.Generator().manual_seed(3))
    linear = QuantizedLinear(k, N, (part,), bias, activation_bits=bits, threads=2, max_tokens=8,
                             panel_dtype=torch.bfloat16 if bits == 16 else torch.float32)
    assert (linear.max_tokens == 8) == (qtype in KERNEL_TYPES)
    worst = 0.0
    for m in (1, 2, 7, 16, 33, 128):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
        ref = x.double() @ dense.T + bias.double()
        got = linear(x)
        assert got.dtype == torch.float32 and got.shape == (m, N)
        error = float((got.double() - ref).norm() / ref.norm())
        worst = max(worst, error)
        if bits == 32:  # exact mode: the dequantized product up to fp32 summation order
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4 * k**0.5)
    bound = 2e-6 if bits == 32 else 6e-3  # measured 2.6e-7 and 2.9e-3 (int16 kernel ~2e-5, bf16 panels ~3e-3)
    print(f"{qtype} activation_bits={bits}: worst relative error {worst:.1e}")
    assert worst < bound


def test_parts_fill_their_own_columns() -> None:
    """A fused projection of three types (q Q4_K, k Q8_0, v Q6_K) equals the stacked dense weights."""
    parts, denses = zip(*(_weight(t, 256 * 2, seed=i) for i, t in enumerate(("Q4_K", "Q8_0", "Q6_K"))), strict=True)
    linear = QuantizedLinear(512, 3 * N, parts, threads=1, max_tokens=4)
    dense = torch.cat(denses)
    for m in (3, 20):
        x = torch.randn(m, 512)
        torch.testing.assert_close(linear(x).double(), x.double() @ dense.T, rtol=1e-5, atol=1e-3)


def test_embedding_dequantizes_the_looked_up_rows() -> None:
    part, dense = _weight("Q6_K", 256, seed=4)
    table = QuantizedEmbedding(part, 256)
    ids = torch.tensor([[0, 196, 5], [5, 5, 100]])
    assert torch.equal(table(ids).double(), dense[ids])
    with pytest.raises(IndexError, match="197-row"):
        table(torch.tensor([197]))


def test_bad_shapes_and_inputs_are_refused() -> None:
    part, _ = _weight("Q8_0", 64, seed=5)
    with pytest.raises(ValueError, match="expected 96"):
        QuantizedLinear(96, N, (part,))
    with pytest.raises(ValueError, match="parts hold 197 rows"):
        QuantizedLinear(64, N + 1, (part,))
    with pytest.raises(ValueError, match="fp32 CPU"):
        QuantizedLinear(64, N, (part,))(torch.randn(1, 64, dtype=torch.float64))
