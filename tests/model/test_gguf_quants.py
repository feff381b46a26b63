"""Every GGUF tensor type bastion claims, read back through a real GGUF file written with gguf.GGUFWriter.

Types gguf can quantize are checked against the original floats; K-quants (which gguf can only
dequantize) are written as hand-built blocks whose value is known from the format.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from bastion.model.gguf_file import SUPPORTED_QUANT_TYPES, dequantize_tensor
from gguf import GGMLQuantizationType as Q

# type -> max |error| allowed for N(0, 1) data (a few quantization steps of that type)
QUANTIZABLE = {Q.F32: 0.0, Q.F16: 2e-3, Q.BF16: 2e-2, Q.Q8_0: 3e-2, Q.Q5_0: 0.25, Q.Q5_1: 0.25,
               Q.Q4_0: 0.5, Q.Q4_1: 0.5}


def _read_back(tmp_path, name: str, raw: np.ndarray, qtype: Q):
    path = tmp_path / f"{name}.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tensor,) = gguf.GGUFReader(path).tensors
    assert tensor.tensor_type == qtype
    return dequantize_tensor(tensor)


@pytest.mark.parametrize("qtype", list(QUANTIZABLE), ids=lambda q: q.name)
def test_quantized_tensor_round_trips(tmp_path, qtype) -> None:
    original = np.random.default_rng(0).standard_normal((6, 256)).astype(np.float32)
    restored = _read_back(tmp_path, "w", gguf.quants.quantize(original, qtype), qtype)
    assert restored.shape == original.shape and restored.dtype == np.float32
    assert float(np.abs(restored - original).max()) <= QUANTIZABLE[qtype]


def _f16(value: float) -> list[int]:
    return list(np.array([value], dtype=np.float16).view(np.uint8))


# One 256-value super-block per K-quant, built from the block layout in ggml-common.h so that every
# value decodes to the same known number.
K_QUANT_BLOCKS = {
    # scales: 16 x (scale 1 | min 0 << 4); 2-bit quants all 3; d = 0.5, dmin = 0 -> 1.5
    Q.Q2_K: ([0x01] * 16 + [0xFF] * 64 + _f16(0.5) + _f16(0.0), 1.5),
    # hmask all set (no -4); 2-bit quants 3; 6-bit scales 33 (low nibbles 1, high bits 2) -> d*(33-32)*3
    Q.Q3_K: ([0xFF] * 32 + [0xFF] * 64 + [0x11] * 8 + [0xAA] * 4 + _f16(0.5), 1.5),
    # d = 0.5, dmin = 0; 8 scales of 1, mins 0; 4-bit quants 7 -> 3.5
    Q.Q4_K: (_f16(0.5) + _f16(0.0) + [1] * 4 + [0] * 4 + [1] * 4 + [0x77] * 128, 3.5),
    # as Q4_K plus every high bit set: quants 7 + 16 = 23 -> 11.5
    Q.Q5_K: (_f16(0.5) + _f16(0.0) + [1] * 4 + [0] * 4 + [1] * 4 + [0xFF] * 32 + [0x77] * 128, 11.5),
    # low nibbles 5, high 2-bit parts 2 -> q = 5 + 32 - 32 = 5; int8 scales 2; d = 0.25 -> 2.5
    Q.Q6_K: ([0x55] * 128 + [0xAA] * 64 + [2] * 16 + _f16(0.25), 2.5),
}


@pytest.mark.parametrize("qtype", list(K_QUANT_BLOCKS), ids=lambda q: q.name)
def test_k_quant_blocks_decode_to_known_values(tmp_path, qtype) -> None:
    block, value = K_QUANT_BLOCKS[qtype]
    assert len(block) == gguf.GGML_QUANT_SIZES[qtype][1]
    raw = np.array([block, block], dtype=np.uint8)  # two rows of one super-block each
    restored = _read_back(tmp_path, "k", raw, qtype)
    assert restored.shape == (2, 256)
    np.testing.assert_allclose(restored, value)


def test_every_claimed_type_is_tested() -> None:
    tested = {q.name for q in QUANTIZABLE} | {q.name for q in K_QUANT_BLOCKS}
    assert tested == set(SUPPORTED_QUANT_TYPES)
