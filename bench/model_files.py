"""Random-weight GGUF files of real model shapes, for the model-size benchmarks (nothing is downloaded).

An F16 file is written with gguf-py (random normal weights, std 0.02, and unit norms, under llama.cpp's
tensor names and metadata), then quantized with llama.cpp's ``llama-quantize``. Random weights make
the output text meaningless but every matmul, cache and attention step the same size as the real
model's, which is all a speed or memory figure depends on. Files are cached in ``workdir`` by name.

``llama-quantize`` comes from the llama-cpp-python sdist (see bench/README.md)::

    pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    cd llama_cpp_python-*/vendor/llama.cpp && cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \\
        -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2 --target llama-quantize llama-server

and is found on ``PATH`` or through ``$LLAMA_CPP_BIN`` (the ``build/bin`` directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters of a Llama-family model that decide its cost."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    rope_theta: float
    context: int = 4096
    llama3_rope: bool = False  # llama3-style rope scaling (a rope_freqs tensor)

    @property
    def parameters(self) -> int:
        """Weights in the linears and embeddings (norms left out)."""
        head_dim = self.hidden // self.heads
        attn = self.hidden * head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp) + self.vocab * self.hidden * (1 if self.tied else 2)


SHAPES: dict[str, ModelShape] = {
    "smollm2-135m": ModelShape("smollm2-135m", 576, 1536, 30, 9, 3, 49152, True, 100000.0, context=8192),
    "llama-3.2-1b": ModelShape("llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, True, 500000.0, llama3_rope=True),
    "smollm2-1.7b": ModelShape("smollm2-1.7b", 2048, 8192, 24, 32, 32, 49152, True, 130000.0),
    "llama-3.1-8b": ModelShape("llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256, False, 500000.0, llama3_rope=True),
}


def llama_cpp_tool(name: str) -> str:
    """Path of a llama.cpp tool (``llama-quantize``, ``llama-server``): ``$LLAMA_CPP_BIN`` or ``PATH``."""
    directory = os.environ.get("LLAMA_CPP_BIN")
    if directory and (Path(directory) / name).is_file():
        return str(Path(directory) / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: build it from the llama-cpp-python sdist (bench/model_files.py) "
                                "and put its build/bin on PATH or in $LLAMA_CPP_BIN")
    return found


def _llama3_rope_freqs(head_dim: int, theta: float) -> np.ndarray:
    """Llama 3.1's rope scaling (factor 8, low/high frequency factors 1/4, original context 8192) as the
    per-frequency divisors llama.cpp stores in ``rope_freqs.weight``."""
    factor, low, high, original = 8.0, 1.0, 4.0, 8192
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = np.clip((original / wavelen - low) / (high - low), 0.0, 1.0)
    divisors = np.where(wavelen > original / low, factor, np.where(wavelen < original / high, 1.0,
                                                                    1.0 / ((1 - smooth) / factor + smooth)))
    return divisors.astype(np.float32)


def write_f16(shape: ModelShape, path: Path, seed: int = 0) -> Path:
    """Write a random-weight F16 GGUF of ``shape`` (llama architecture, a byte-level BPE vocab)."""
    import gguf

    from tests.helpers.gguf_builder import add_byte_level_tokenizer, add_llama_hyperparameters

    rng = np.random.default_rng(seed)
    head_dim = shape.hidden // shape.heads
    writer = gguf.GGUFWriter(str(path), "llama")
    add_llama_hyperparameters(writer, name=f"random {shape.name}", layers=shape.layers, context=shape.context,
                              hidden=shape.hidden, intermediate=shape.intermediate, heads=shape.heads,
                              kv_heads=shape.kv_heads, rope_theta=shape.rope_theta)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_byte_level_tokenizer(writer, shape.vocab, pre="default")

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    tensors: list[tuple[str, tuple[int, int] | int]] = [("token_embd.weight", (shape.vocab, shape.hidden))]
    if not shape.tied:
        tensors.append(("output.weight", (shape.vocab, shape.hidden)))
    tensors.append(("output_norm.weight", shape.hidden))
    q, kv = shape.heads * head_dim, shape.kv_heads * head_dim
    for i in range(shape.layers):
        tensors += [(f"blk.{i}.attn_norm.weight", shape.hidden), (f"blk.{i}.ffn_norm.weight", shape.hidden),
                    (f"blk.{i}.attn_q.weight", (q, shape.hidden)), (f"blk.{i}.attn_k.weight", (kv, shape.hidden)),
                    (f"blk.{i}.attn_v.weight", (kv, shape.hidden)), (f"blk.{i}.attn_output.weight", (shape.hidden, q)),
                    (f"blk.{i}.ffn_gate.weight", (shape.intermediate, shape.hidden)),
                    (f"blk.{i}.ffn_up.weight", (shape.intermediate, shape.hidden)),
                    (f"blk.{i}.ffn_down.weight", (shape.hidden, shape.intermediate))]
    # gguf-py writes tensor data in add order; declare shapes first, then stream each array
    for name, dims in tensors:
        if isinstance(dims, int):
            writer.add_tensor_info(name, (dims,), np.dtype(np.float32), dims * 4, gguf.GGMLQuantizationType.F32)
        else:
            writer.add_tensor_info(name, dims, np.dtype(np.float16), dims[0] * dims[1] * 2,
                                   gguf.GGMLQuantizationType.F16)
    if shape.llama3_rope:
        freqs = _llama3_rope_freqs(head_dim, shape.rope_theta)
        writer.add_tensor_info("rope_freqs.weight", freqs.shape, freqs.dtype, freqs.nbytes,
                               gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _name, dims in tqdm(tensors, desc=f"writing {path.name}", unit="tensor"):
        writer.write_tensor_data(np.ones(dims, dtype=np.float32) if isinstance(dims, int) else matrix(*dims))
    if shape.llama3_rope:
        writer.write_tensor_data(freqs)
    writer.close()
    return path


def model_file(shape_name: str, qtype: str, workdir: Path) -> Path:
    """The cached GGUF of ``shape_name`` in ``qtype`` ("F16", "Q4_K_M", "Q8_0", ...), built when missing;
    ``smollm2-135m`` in Q4_1 is the embedded default model itself (real weights)."""
    if (shape_name, qtype) == ("smollm2-135m", "Q4_1"):
        from bastion.model import default_model_path

        return default_model_path()
    shape = SHAPES[shape_name]
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / f"{shape.name}-{qtype}.gguf"
    if target.is_file():
        return target
    f16 = workdir / f"{shape.name}-F16.gguf"
    if not f16.is_file():
        partial = f16.with_suffix(".partial")
        write_f16(shape, partial)
        partial.rename(f16)
    if qtype == "F16":
        return f16
    partial = target.with_suffix(".partial")
    subprocess.run([llama_cpp_tool("llama-quantize"), str(f16), str(partial), qtype], check=True,
                   stdout=subprocess.DEVNULL)
    partial.rename(target)
    return target
