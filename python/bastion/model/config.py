"""``ModelConfig``: the architecture hyper-parameters of a Llama-family model, from HF config.json or GGUF."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bastion.errors import ModelLoadError

# HF ``architectures[0]`` -> our architecture name. All are the same decoder; the differences are
# data (QKV bias, tied embeddings, rope scaling, sliding window), read from the config.
HF_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("llama", "mistral", "qwen2")


@dataclass
class ModelConfig:
    """Hyper-parameters of a Llama-family decoder (names follow HF where HF has one)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    sliding_window: int | None = None
    name: str = ""
    weights_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ModelLoadError(
                f"unsupported architecture {self.architecture!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ModelLoadError(f"model config: {name} must be positive, got {getattr(self, name)!r}")
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(
                f"model config: num_heads ({self.num_heads}) is not a multiple of num_kv_heads ({self.num_kv_heads})"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``ModelConfig(**d)`` rebuilds it."""
        return asdict(self)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], *, name: str = "") -> ModelConfig:
        """Build from the dict of a Hugging Face ``config.json``."""
        archs = cfg.get("architectures") or []
        hf_arch = archs[0] if archs else cfg.get("model_type", "?")
        arch = HF_ARCHITECTURES.get(hf_arch)
        if arch is None:
            raise ModelLoadError(
                f"unsupported architecture {hf_arch!r}; supported: {', '.join(HF_ARCHITECTURES)}"
            )
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            # transformers 5 moved rope_theta/rope_scaling into ``rope_parameters``
            rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
            theta = float(rope.pop("rope_theta", None) or cfg.get("rope_theta") or 10000.0)
            rope_type = rope.get("rope_type", rope.get("type", "default"))
            if arch == "qwen2" and cfg.get("use_sliding_window"):
                # Qwen2 slides only above max_window_layers; one window for every layer would be wrong
                raise ModelLoadError("Qwen2 with use_sliding_window=true is not supported")
            window = cfg.get("sliding_window") if arch == "mistral" else None
            return cls(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                rope_theta=theta,
                rope_scaling=rope if rope_type != "default" else None,
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                # Qwen2 always has q/k/v biases; Llama's config says whether it has them
                attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias")),
                sliding_window=int(window) if window else None,
                name=name or str(cfg.get("_name_or_path", "")),
            )
        except KeyError as exc:
            raise ModelLoadError(f"config.json lacks required key {exc.args[0]!r}") from exc
