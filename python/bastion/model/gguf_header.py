"""A GGUF file's header in one pass: metadata as Python values, tensors as numpy views of one map.

gguf-py's ``GGUFReader`` keeps a numpy view for every part of every field, so an array of 128k
token strings becomes ~400k small arrays before a single value is read: on Llama-3.2-1B's vocabulary
that was most of a load (see ``bench/README.md``). This reader parses the same header (GGUF v2 and
v3: little-endian, ``general.alignment``) with ``struct`` from the mapped bytes, and gives each tensor
the same view gguf-py does: quantized rows as ``uint8 [rows, bytes per row]``, F32/F16 as their
float dtype, BF16 as ``uint16``, all of one private copy-on-write map of the file.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_MAGIC = b"GGUF"
# GGUF value types -> struct format of one scalar (8 = string, 9 = array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_FLOAT_VIEWS = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the file: gguf-py's names for the fields the loader reads."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file
    data: np.ndarray


class GGUFHeader:
    """``fields`` (key -> value: str, int, float, bool, or a list of them) and ``tensors`` of a GGUF file."""

    def __init__(self, path: str | Path) -> None:
        """Map ``path`` and parse its header; ValueError naming what is wrong for a file that is not GGUF."""
        import gguf

        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        buf = self._map
        if buf[:4] != _MAGIC:
            raise ValueError("bad magic: not a GGUF file")
        version, tensor_count, kv_count = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
        self._pos = 24
        self.fields: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            (value_type,) = self._unpack("<I")
            self.fields[key] = self._value(value_type)
        infos = []
        for _ in range(tensor_count):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q")
            type_code, offset = self._unpack("<IQ")
            infos.append((name, dims, gguf.GGMLQuantizationType(type_code), offset))
        alignment = int(self.fields.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        whole = np.frombuffer(self._map, dtype=np.uint8)
        self.tensors: list[GGUFTensor] = []
        for name, dims, qtype, offset in infos:
            n_elements = int(np.prod(dims, dtype=np.int64)) if dims else 1
            block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            n_bytes = n_elements // block_values * block_bytes
            start = data_start + offset
            if start + n_bytes > len(whole):
                raise ValueError(f"file is truncated (tensor {name!r} ends past the end of the file)")
            raw = whole[start:start + n_bytes]
            rows = tuple(int(d) for d in reversed(dims))  # numpy order
            if qtype.name in _FLOAT_VIEWS:
                data = raw.view(_FLOAT_VIEWS[qtype.name]).reshape(rows)
            else:
                data = raw.reshape(*rows[:-1], rows[-1] // block_values * block_bytes)
            self.tensors.append(GGUFTensor(name, qtype, tuple(int(d) for d in dims), n_elements, n_bytes, start,
                                           data))

    def _unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (length,) = struct.unpack_from("<Q", self._map, self._pos)
        start = self._pos + 8
        self._pos = start + length
        return self._map[start:self._pos].decode("utf-8", errors="replace")

    def _value(self, value_type: int) -> Any:
        if value_type == 8:
            return self._string()
        if value_type in _SCALARS:
            return self._unpack("<" + _SCALARS[value_type])[0]
        if value_type != 9:
            raise ValueError(f"unknown GGUF value type {value_type}")
        item_type, count = self._unpack("<IQ")
        if item_type in _NUMPY:  # numbers: one bulk read
            items: np.ndarray = np.frombuffer(self._map, dtype=_NUMPY[item_type], count=count, offset=self._pos)
            self._pos += items.nbytes
            return items.tolist()
        return [self._value(item_type) for _ in range(count)]
