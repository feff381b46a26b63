"""The int8 dot-product paths of ``quant_matmul`` (csrc/cpu/quant_i8_kernel.inc) on every instruction set
this CPU runs: AVX-512 VNNI, AVX-VNNI (256-bit VEX) and the AVX2 ``maddubs`` fallback, each forced with
``quant_matmul(..., isa=...)`` or ``set_quant_isa``.

8-bit activations are llama.cpp's Q8_0 rounding (int8 per 32 values, d = max|x| / 127); 16-bit ones on
VNNI are int16 per 32 values (d = max|x| / 32639) split in two int8 planes. Each is checked twice: against
the fp64 product of the *rounded* x and gguf-py's dequantized weight (only fp32 summation differs), and
against the exact fp64 product (the rounding's own error, printed with ``pytest -s``: the figures
bench/README.md quotes). A row's result must not depend on the batch it is in, nor on the thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from bastion._core import cpu

gguf = pytest.importorskip("gguf")
from bastion.model.quant_linear import KERNEL_TYPES as TYPES  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from ..helpers.gguf_builder import K_QUANT_SCALE_BYTES, random_blocks  # noqa: E402

ISAS = ["avx2", "avxvnni", "avx512vnni"]
MS = (1, 2, 3, 7, 8, 9, 16, 33)


def _supported(isa: str) -> bool:
    try:
        cpu.quant_matmul(0, 0, 0, 0, 1, 32, 8, 1, 8, 0, isa)  # M = 0: only the arguments are checked
    except ValueError:
        return False
    return True


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    if not _supported(request.param):
        pytest.skip(f"this CPU does not run {request.param}")
    return str(request.param)


def _weight(qtype: str, n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(blocks uint8 [n, bytes], fp64 dequantized [n, k])``: gguf-py's quantizer where it has one,
    random blocks with sane fp16 scales for the K-quants."""
    gtype = gguf.GGMLQuantizationType[qtype]
    if gtype in K_QUANT_SCALE_BYTES:
        blocks = random_blocks(gtype, n, k, seed, scales=(0.001, 0.02))
    else:
        rng = np.random.default_rng(seed)
        blocks = np.ascontiguousarray(quantize(rng.standard_normal((n, k)).astype(np.float32), gtype))
    dense = torch.from_numpy(np.asarray(dequantize(blocks, gtype), np.float64).reshape(n, k))
    return torch.from_numpy(blocks), dense


def _matmul(x: torch.Tensor, blocks: torch.Tensor, qtype: str, n: int, bits: int, isa: str, threads: int = 2,
            out: torch.Tensor | None = None, ldy: int = 0) -> torch.Tensor:
    y = torch.full((x.shape[0], n), float("nan")) if out is None else out
    cpu.quant_matmul(x.data_ptr(), blocks.data_ptr(), y.data_ptr(), x.shape[0], n, x.shape[1], TYPES[qtype], threads,
                     bits, ldy, isa)
    return y


def _rounded(x: torch.Tensor, bits: int, isa: str) -> torch.Tensor:
    """x rounded as the kernel rounds it (fp32 scale and reciprocal, nearest, ties to even), as fp64."""
    top = 127 if bits == 8 else (32767 if isa == "avx2" else 32639)
    blocks = x.reshape(x.shape[0], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / top
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    return (torch.round(blocks * inv).double() * d.double()).reshape(x.shape)


def _x(m: int, k: int, seed: int) -> torch.Tensor:
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[0, :32] = 0.0  # an all-zero block: d = 0, no division by zero
    if m > 1:
        x[1, 40:50] = 30.0  # an outlier block
    return x


def _k(qtype: str) -> int:
    """An odd number of blocks: 3 of 256, or 7 of 32 (the 512-bit path pairs sub-blocks: a tail of one)."""
    return 768 if qtype.endswith("_K") else 224


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("qtype", list(TYPES))
def test_matches_the_rounded_product_and_bounds_the_rounding(qtype: str, bits: int, isa: str) -> None:
    n, k = 197, _k(qtype)  # N: a tail past every panel and vector width
    blocks, dense = _weight(qtype, n, k, seed=3)
    worst = 0.0
    for m in MS:
        x = _x(m, k, seed=m)
        got = _matmul(x, blocks, qtype, n, bits, isa).double()
        ref = _rounded(x, bits, isa) @ dense.T
        scale = float(ref.abs().max())
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * scale + 1e-4)  # fp32 sums only
        exact = x.double() @ dense.T
        worst = max(worst, float((got - exact).norm() / exact.norm()))
    print(f"{qtype} {isa} activation_bits={bits}: worst relative error vs the exact product {worst:.1e}")
    assert worst < (2e-2 if bits == 8 else 1e-4)  # measured ~5e-3 (8) and ~2e-5 (16)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1", "Q4_K", "Q6_K", "Q4_0"])
@pytest.mark.parametrize("bits", [8, 16])
def test_a_row_does_not_depend_on_its_batch_or_the_threads(qtype: str, bits: int, isa: str) -> None:
    """Bitwise: each row of a 33-row call equals the row alone (M = 1, 2 and the 8-row tiles take
    different code), and 1, 2 or 3 threads give the same bits."""
    n, k = 61, 512
    blocks, _ = _weight(qtype, n, k, seed=5)
    x = _x(33, k, seed=9)
    batch = _matmul(x, blocks, qtype, n, bits, isa, threads=2)
    for r in (0, 1, 5, 8, 32):
        assert torch.equal(_matmul(x[r:r + 1], blocks, qtype, n, bits, isa, threads=1), batch[r:r + 1])
        assert torch.equal(_matmul(x[r:r + 2], blocks, qtype, n, bits, isa, threads=3)[:1], batch[r:r + 1])
    assert torch.equal(_matmul(x, blocks, qtype, n, bits, isa, threads=3), batch)


@pytest.mark.parametrize("qtype", ["Q6_K", "Q4_K", "Q8_0"])
def test_long_rows_in_k_slices(qtype: str, isa: str) -> None:
    """K = 8192 (a 1B model's ffn_down): 16-bit tiles run in K slices that keep their records in L1,
    the accumulators carried from slice to slice; same sums as unsliced rows (M = 1, 2) bit for bit."""
    n, k = 40, 8192
    blocks, dense = _weight(qtype, n, k, seed=11)
    x = _x(11, k, seed=2)
    for bits in (16, 8):
        batch = _matmul(x, blocks, qtype, n, bits, isa)
        torch.testing.assert_close(batch.double(), _rounded(x, bits, isa) @ dense.T, rtol=1e-4,
                                   atol=1e-5 * float((x.double() @ dense.T).abs().max()) + 1e-4)
        for r in (0, 3, 10):
            assert torch.equal(_matmul(x[r:r + 1], blocks, qtype, n, bits, isa), batch[r:r + 1])


def test_q8_0_bytes_of_minus_128(isa: str) -> None:
    """Q8_0 blocks may hold -128 (files not made by ggml's quantizer): |w| = 128 is where the AVX2 sign
    trick and the +128 bias of the VNNI paths are at their edge."""
    n, k = 9, 64
    rng = np.random.default_rng(0)
    raw = rng.integers(-128, 128, size=(n * k // 32, 34), dtype=np.int16).astype(np.int8).view(np.uint8)
    raw[:, 2:10] = np.uint8(0x80)  # -128
    raw[:, 0:2] = np.array([0.01], np.float16).view(np.uint8)
    dense = torch.from_numpy(np.asarray(dequantize(raw, gguf.GGMLQuantizationType.Q8_0), np.float64).reshape(n, k))
    blocks = torch.from_numpy(raw.reshape(n, -1))
    x = torch.full((2, k), -1.0)  # rounds to -127: the largest products there are
    x[1] = torch.linspace(-3, 3, k)
    for bits in (8, 16):
        got = _matmul(x, blocks, "Q8_0", n, bits, isa).double()
        torch.testing.assert_close(got, _rounded(x, bits, isa) @ dense.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 16])
def test_parts_fill_a_column_range_of_a_wider_output(bits: int, isa: str) -> None:
    """ldy > N: a fused projection's parts (Q4_K, Q6_K) write their own columns of one output."""
    parts = [("Q4_K", *_weight("Q4_K", 24, 256, seed=1)), ("Q6_K", *_weight("Q6_K", 16, 256, seed=2))]
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(4))
    out = torch.full((5, 40), float("nan"))
    first = 0
    for qtype, blocks, dense in parts:
        _matmul(x, blocks, qtype, dense.shape[0], bits, isa, out=out[:, first:], ldy=40)
        first += dense.shape[0]
    ref = _rounded(x, bits, isa) @ torch.cat([d for _, _, d in parts]).T
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [32, 96, 288])
def test_odd_block_counts(k: int, isa: str) -> None:
    """1, 3 and 9 blocks of 32: a group of 8 sub-blocks that is partly (or only) tail."""
    for qtype in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        blocks, dense = _weight(qtype, 13, k, seed=k)
        x = _x(3, k, seed=k)
        for bits in (8, 16):
            got = _matmul(x, blocks, qtype, 13, bits, isa).double()
            torch.testing.assert_close(got, _rounded(x, bits, isa) @ dense.T, rtol=1e-4, atol=1e-4)


def test_isa_selection() -> None:
    """set_quant_isa forces the path for every call (the decoder program included) and returns the one it
    replaces; an isa this CPU lacks, or an unknown name, is refused."""
    detected = cpu.detected_quant_isa()
    assert detected in ISAS and _supported(detected)
    previous = cpu.set_quant_isa("avx2")
    try:
        assert cpu.quant_isa() == "avx2"
        blocks, _ = _weight("Q4_1", 8, 64, seed=1)
        x = torch.randn(2, 64)
        assert torch.equal(_matmul(x, blocks, "Q4_1", 8, 8, "auto"), _matmul(x, blocks, "Q4_1", 8, 8, "avx2"))
    finally:
        cpu.set_quant_isa("auto")
    assert previous == cpu.quant_isa() == detected
    with pytest.raises(ValueError, match="quant isa must be"):
        cpu.set_quant_isa("sse2")
    with pytest.raises(ValueError, match="quant isa must be"):
        cpu.quant_matmul(0, 0, 0, 0, 1, 32, 8, 1, 8, 0, "neon")
    for name in ISAS:
        if not _supported(name):
            with pytest.raises(ValueError, match="cannot run"):
                cpu.set_quant_isa(name)


def test_environment_variable_picks_the_default() -> None:
    """BASTION_QUANT_ISA sets the process's default (read once); a name the CPU lacks falls back to the best."""
    code = "from bastion._core import cpu; print(cpu.quant_isa())"
    env = dict(os.environ, BASTION_QUANT_ISA="avx2")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "avx2"
    env["BASTION_QUANT_ISA"] = "bogus"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == cpu.detected_quant_isa()
