"""Zero-copy loading of a safetensors file: tensors are views of a copy-on-write memory map.

``safetensors.torch.load_file`` copies every tensor into fresh memory; for a cached model that is a
full read of the file before the first token. Mapping the file instead lets the OS page weights in
on first use and share them between processes loading the same model.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from bastion.errors import ModelLoadError

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8}


def save(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` as a safetensors file (contiguous CPU copies where needed)."""
    from safetensors.torch import save_file

    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(path))


def load_mmap(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a view into a private (copy-on-write) map of it."""
    try:
        with path.open("rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        (header_len,) = struct.unpack("<Q", mapped[:8])
        header = json.loads(mapped[8 : 8 + header_len])
    except (OSError, ValueError, struct.error) as exc:
        raise ModelLoadError(f"{path}: unreadable safetensors file ({exc})") from exc
    base = 8 + header_len
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        start, end = info["data_offsets"]
        if dtype is None or base + end > len(mapped):
            raise ModelLoadError(f"{path}: tensor {name!r} has an unsupported dtype or lies past the end of the file")
        flat = torch.frombuffer(mapped, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start)
        tensors[name] = flat.view(info["shape"])
    return tensors
