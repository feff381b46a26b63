"""Read a Hugging Face model directory: ``config.json`` and ``*.safetensors`` weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bastion.errors import ModelLoadError
from bastion.model.config import ModelConfig


def weight_files(directory: Path) -> list[Path]:
    """The directory's ``*.safetensors`` files in a stable order; ModelLoadError if there are none."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{directory}: no *.safetensors weight files (only safetensors checkpoints are supported)")
    return files


def read_hf_config(directory: Path) -> ModelConfig:
    """Parse ``config.json`` into a ``ModelConfig``."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{directory}: missing config.json")
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path}: unreadable config ({exc})") from exc
    return ModelConfig.from_hf(raw, name=directory.name)


def read_hf_weights(directory: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Load every safetensors file of ``directory`` into one state dict cast to ``dtype``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in tqdm(weight_files(directory), desc=f"loading {directory.name}", unit="file", leave=False):
        try:
            part = load_file(os.fspath(file))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: corrupt or unreadable safetensors file ({exc})") from exc
        tensors.update({name: t.to(dtype) for name, t in part.items()})
    return tensors
