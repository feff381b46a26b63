"""Rotary embedding tables: inverse frequencies (with rope scaling) and the ``cos_sin_cache`` of bastion.ops.

Supported scalings: none, ``linear`` (positions divided by ``factor``), ``llama3`` (Llama 3.1's
frequency-dependent smoothing, as in HF ``_compute_llama3_parameters``) and ``freq_factors`` (llama.cpp's
``rope_freqs`` tensor: per-frequency divisors, how GGUF files store llama3 scaling).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bastion.errors import ModelLoadError


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = float(scaling["factor"])
    low_freq_factor = float(scaling.get("low_freq_factor", 1.0))
    high_freq_factor = float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are slowed by ``factor``, short ones kept, the band between interpolated
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def inverse_frequencies(rot_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """``[rot_dim / 2]`` float64 inverse frequencies after rope scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default" or scaling is None:  # no scaling dict means kind "default"
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    if kind == "freq_factors":
        factors = torch.tensor(scaling["factors"], dtype=torch.float64)
        if factors.numel() != inv_freq.numel():
            raise ModelLoadError(f"rope_freqs has {factors.numel()} factors, expected {inv_freq.numel()}")
        return inv_freq / factors
    raise ModelLoadError(f"unsupported rope scaling {kind!r} (supported: linear, llama3, GGUF rope_freqs)")


def build_cos_sin_cache(max_positions: int, rot_dim: int, theta: float, scaling: dict[str, Any] | None,
                        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[max_positions, rot_dim]``: cos of ``pos * f_i`` for each frequency, then sin (computed in float64)."""
    inv_freq = inverse_frequencies(rot_dim, theta, scaling)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(dtype=dtype, device=device)
