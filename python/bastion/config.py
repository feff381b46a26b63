"""Engine configuration: one validated pydantic model shared by ``LLM`` and ``AsyncLLM``.

Knobs keep vLLM's names where vLLM has one. Values come from keyword arguments, a JSON/TOML/YAML
file (``EngineConfig.from_file``) or ``BASTION_*`` environment variables; a bad value raises a
``ValueError`` that names its field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# the choices of quantize_weights and kernel_backend come from the code that implements them
from bastion.model.quantize_on_load import QuantizeType
from bastion.ops.dispatch import Backend


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """What a .json, .toml or .yaml settings file holds; ValueError for another suffix."""
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
    elif p.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        raise ValueError(f"config file {p}: unsupported suffix {p.suffix!r} (use .json, .toml or .yaml)")
    return data


class Settings(BaseSettings):
    """A settings model whose ``build`` reports a bad value as a ValueError naming its field."""

    @classmethod
    def build(cls, **kwargs: Any) -> Self:
        """Validate keyword arguments; re-raise pydantic's error as a ValueError naming the field."""
        try:
            return cls(**kwargs)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "config"
            raise ValueError(f"{field}: {first['msg']} (got {first.get('input')!r})") from None


class EngineConfig(Settings):
    """Every setting of the engine. See the README for what each one trades."""

    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="forbid", validate_assignment=True)

    model: str | None = Field(None, description="GGUF file or HF directory; None = embedded SmolLM2")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = Field(0, ge=0, description="default sampling seed of the engine")
    quantize_weights: Literal["none", QuantizeType] = Field(
        "none", description="CPU fp32: also round weights the model file stores unquantized (HF directories, "
                            "F16/BF16/F32 GGUFs) to these GGUF blocks, so small steps run on the block path")
    activation_bits: Literal[16, 32] = Field(
        16, description="CPU steps on the GGUF block kernel (block_kernel_max_tokens) round activations to int16 "
                        "per 32 values, ~2e-5 relative error per matmul, for integer dot products (AVX-512 VNNI / "
                        "AVX-VNNI where the CPU has them: 2-3.5x the AVX2 int16 rate); 32 keeps the exact fp32 "
                        "math. int8 (llama.cpp's Q8_0 activations) is not offered: it changes SmolLM2's greedy "
                        "answers")
    gemm_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="CPU: dtype of the GEMM big steps (prefill, batches of more than 8 requests under "
                               "bfloat16) run on dequantized weight panels; bfloat16 is 3-4x faster where the CPU "
                               "multiplies it natively (AVX512-BF16, AMX), ~3e-3 relative error per matmul: enough "
                               "to change a small model's greedy answers when decode steps run it, and greedy "
                               "output then depends on batching")
    dequantize_weights: bool = Field(
        False, description="dequantize a GGUF's quantized weights to dtype at load (exact dequantized math, 4 bytes "
                           "per weight); by default the CPU runs every linear on the file's own blocks")
    block_kernel_max_tokens: int | None = Field(
        None, ge=0, description="CPU: largest step (tokens) the GGUF block kernel serves, bigger ones taking the "
                                "dequantized-panel GEMM; None = tuned to the thread count; 0 = panels only")
    kv_cache_dtype: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        "auto", description="KV cache precision (vLLM's knob): auto = fp16 on the CPU, the model dtype on a GPU")

    block_size: int = Field(16, ge=1, le=256, description="tokens per KV block")
    num_kv_blocks: int | None = Field(None, ge=2, description="KV blocks; None = from kv_cache_memory_mb")
    kv_cache_memory_mb: int = Field(1024, ge=1, description="memory given to the KV cache when num_kv_blocks is "
                                                            "None, shrunk to what memory_budget_mb leaves")
    memory_budget_mb: int | None = Field(
        None, ge=1, description="memory the weights and the KV cache share; None = 90 % of the memory available "
                                "when the engine starts. A model that does not fit is refused before loading")
    max_num_seqs: int = Field(128, ge=1, description="most sequences in one step")
    max_num_batched_tokens: int = Field(2048, ge=1, description="token budget of one step")
    max_model_len: int | None = Field(None, ge=1, description="context length; None = the model's own")
    long_prefill_token_threshold: int = Field(0, ge=0, description="cap of one request's prefill chunk (0 = none)")
    enable_prefix_caching: bool = True
    prefix_cache_seed: int = Field(0, ge=0, description="seed of the prefix-hash chain (deterministic)")
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"

    max_queued_requests: int | None = Field(None, ge=1, description="admission bound; past it: Overloaded")
    max_queued_tokens: int | None = Field(None, ge=1, description="bound on queued prompt tokens")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch and kernels; None = all cores")
    kernel_backend: Literal["auto", Backend] = Field(
        "auto", description="backend of every bastion.ops call the model and sampler make; "
        "\"auto\" = fastest for the device; ops the backend lacks go where \"auto\" sends them")
    enforce_eager: bool = Field(False, description="run module by module: no CUDA graphs on a GPU, no one-call "
                                                   "C++ decoder for small CPU steps")
    structured_outputs_timeout: float = Field(
        30.0, gt=0, description="seconds a request with structured_outputs may wait for its grammar to compile "
                                "(off the engine thread; the batch keeps running); past it the request ends with "
                                "finish_reason \"error\" naming the timeout")
    structured_outputs_jump_forward: bool = Field(
        True, description="append the tokens a request's grammar forces without a model step each (requests "
                          "asking for logprobs never skip steps: every token keeps the model's logprobs)")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> EngineConfig:
        """Load a config from a .json, .toml or .yaml file; keyword overrides win."""
        data = read_config_file(path)
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: expected a mapping of settings, got {type(data).__name__}")
        return cls.build(**{**data, **overrides})

