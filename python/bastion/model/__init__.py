"""Model loading (GGUF / Hugging Face), tokenizer + chat template, and the Llama-family torch model.

See docs/ARCHITECTURE.md, "Model contract". Importing this package pulls in torch.
"""

from __future__ import annotations

from bastion.model.attention_metadata import AttentionMetadata
from bastion.model.config import ModelConfig
from bastion.model.llama import LlamaForCausalLM
from bastion.model.loader import LoadedModel, default_model_path, load_model
from bastion.model.tokenizer import Tokenizer

# the contract's name for the model class
CausalLM = LlamaForCausalLM

__all__ = [
    "AttentionMetadata", "CausalLM", "LlamaForCausalLM", "LoadedModel", "ModelConfig", "Tokenizer",
    "default_model_path", "load_model",
]
