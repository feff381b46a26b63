"""``Tokenizer``: encode/decode through ``tokenizers`` plus the model's chat template and special ids."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from bastion.errors import ModelLoadError
from bastion.model.chat_template import ChatTemplate
from bastion.model.gguf_tokenizer import tokenizer_from_gguf

# our own sidecar next to tokenizer.json in the weight cache
_SPECIALS_FILE = "bastion_tokenizer.json"


class Tokenizer:
    """A model's tokenizer: text <-> ids, special token ids and the chat template."""

    def __init__(self, backend: HFTokenizer, *, bos_token_id: int | None, eos_token_ids: Sequence[int],
                 chat_template: str | None = None) -> None:
        """Wrap a ``tokenizers.Tokenizer``; ``eos_token_ids`` are every id that ends a generation."""
        self.backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(int(i) for i in eos_token_ids))
        self.chat_template = chat_template
        self._template = ChatTemplate(chat_template) if chat_template else None

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self) -> int | None:
        """The primary end-of-sequence id (the first of ``eos_token_ids``)."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def _token(self, token_id: int | None) -> str:
        return "" if token_id is None else (self.backend.id_to_token(token_id) or "")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` adds BOS where the model wants one."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens such as ``<|im_end|>`` dropped unless asked for)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of one token string, or None when it is not in the vocab."""
        return self.backend.token_to_id(token)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                            **variables: Any) -> str:
        """Prompt text for a conversation, rendered with the model's own chat template."""
        if self._template is None:
            raise ValueError("this model has no chat template; pass a plain prompt instead")
        return self._template.render(
            messages, add_generation_prompt=add_generation_prompt,
            bos_token=self._token(self.bos_token_id), eos_token=self._token(self.eos_token_id), **variables,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """Build from the ``tokenizer.*`` metadata of a GGUF file."""
        eos = [meta[f"tokenizer.ggml.{k}_token_id"] for k in ("eos", "eot", "eom") if f"tokenizer.ggml.{k}_token_id" in meta]
        return cls(tokenizer_from_gguf(meta), bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
                   eos_token_ids=eos, chat_template=meta.get("tokenizer.chat_template"))

    @classmethod
    def from_hf_dir(cls, directory: str | Path) -> Tokenizer:
        """Build from ``tokenizer.json``, ``tokenizer_config.json`` and ``generation_config.json``."""
        directory = Path(directory)
        backend = _load_backend(directory / "tokenizer.json")
        config = _read_json(directory / "tokenizer_config.json")
        generation = _read_json(directory / "generation_config.json")

        def token_id(entry: Any) -> int | None:
            text = entry.get("content") if isinstance(entry, dict) else entry
            return backend.token_to_id(text) if isinstance(text, str) else None

        eos_ids = generation.get("eos_token_id")
        eos = list(eos_ids) if isinstance(eos_ids, list) else ([eos_ids] if eos_ids is not None else [])
        config_eos = token_id(config.get("eos_token"))
        eos = ([config_eos] if config_eos is not None else []) + eos
        bos = token_id(config.get("bos_token"))
        template = config.get("chat_template")
        if template is None and (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text()
        return cls(backend, bos_token_id=bos if bos is not None else generation.get("bos_token_id"),
                   eos_token_ids=eos, chat_template=template)

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` and our special-ids sidecar (reloaded by ``load``)."""
        directory = Path(directory)
        self.backend.save(str(directory / "tokenizer.json"))
        specials = {"bos_token_id": self.bos_token_id, "eos_token_ids": list(self.eos_token_ids),
                    "chat_template": self.chat_template}
        (directory / _SPECIALS_FILE).write_text(json.dumps(specials))

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Reload a tokenizer written by ``save``."""
        directory = Path(directory)
        specials = _read_json(directory / _SPECIALS_FILE)
        return cls(_load_backend(directory / "tokenizer.json"), **specials)


def _load_backend(path: Path) -> HFTokenizer:
    if not path.is_file():
        raise ModelLoadError(f"missing tokenizer file: {path}")
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ModelLoadError(f"{path}: unreadable tokenizer ({exc})") from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: invalid JSON ({exc})") from exc
