"""llguidance, the library behind structured outputs: its tokenizer, and each constraint as its grammar.

This is the one module that knows llguidance's API (chosen over xgrammar by measurement, see
docs/STRUCTURED_OUTPUTS.md). A constraint becomes llguidance grammar text:

- ``json``: the schema, with JSON options fixed for every request: ``", "`` and ``": "`` separators
  (what SmolLM2 and most chat models write unprompted) and no free whitespace between tokens (a small
  model under a grammar that allows any whitespace can emit newlines forever). Schema keywords llguidance
  does not implement are errors, never silently ignored.
- ``json_object``: the schema ``{"type": "object"}`` under the same options.
- ``regex``: Rust ``regex`` syntax, matched by the whole output.
- ``choice``: a Lark grammar ``start: "a" | "b"`` (each choice quoted as a JSON string).
- ``grammar``: Lark (llguidance's dialect), or llama.cpp's GBNF (converted to Lark).
"""

from __future__ import annotations

import hashlib
import json
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bastion.sampling.structured_params import StructuredOutputsParams

if TYPE_CHECKING:
    from bastion.model import Tokenizer

_EXCERPT = re.compile(r"^\d+ \|")  # a numbered grammar line quoted under an error
JSON_OPTIONS: dict[str, Any] = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


def llguidance() -> ModuleType:
    """The llguidance module; ValueError naming ``structured_outputs`` when it is not installed."""
    try:
        import llguidance as llg
    except ImportError as exc:  # a dependency of bastion; only a broken install lacks it
        raise ValueError(f"structured_outputs: needs the llguidance package (pip install llguidance): {exc}") from None
    return llg


def tokenizer_fingerprint(tokenizer: Tokenizer, vocab_size: int) -> str:
    """A digest of everything a compiled grammar depends on: the tokenizer's JSON, eos ids, vocab size."""
    digest = hashlib.sha256(tokenizer.backend.to_str().encode())
    digest.update(json.dumps([list(tokenizer.eos_token_ids), vocab_size]).encode())
    return digest.hexdigest()


def make_tokenizer(tokenizer: Tokenizer, vocab_size: int) -> Any:
    """llguidance's ``LLTokenizer`` for ``tokenizer``, masks ``vocab_size`` wide (the model's logits width
    when it is the larger). Special tokens (added tokens marked special) are never allowed inside text;
    the eos ids end the grammar. Takes ~0.2 s for a 49152-token vocabulary: built once per tokenizer."""
    llg = llguidance()
    eos = list(tokenizer.eos_token_ids)
    if not eos:
        raise ValueError("structured_outputs: the model's tokenizer has no end-of-sequence token to end a grammar")
    return llg.LLTokenizer(tokenizer.backend.to_str(), n_vocab=max(vocab_size, tokenizer.vocab_size), eos_token=eos)


def grammar_text(params: StructuredOutputsParams) -> str:
    """The llguidance grammar of a constraint (not yet checked against a tokenizer)."""
    llg = llguidance()
    kind, spec = params.kind, params.spec
    try:
        if kind in ("json", "json_object"):
            return str(llg.LLMatcher.grammar_from_json_schema(spec, overrides=JSON_OPTIONS))
        if kind == "regex":
            return str(llg.LLMatcher.grammar_from_regex(spec))
        if kind == "choice":
            return str(llg.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in params.choice or ())))
        return str(llg.grammar_from("grammar", spec))  # Lark as it is; GBNF converted to Lark
    except ValueError as exc:
        raise ValueError(f"structured_outputs.{kind}: {exc}") from None


def check_grammar(params: StructuredOutputsParams, grammar: str, lltokenizer: Any) -> None:
    """Raise ValueError naming ``structured_outputs.<kind>`` when llguidance rejects ``grammar``."""
    llg = llguidance()
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, lltokenizer)
    if is_error:
        raise ValueError(f"structured_outputs.{params.kind}: {_first_line(messages[0] if messages else 'invalid')}")


def new_matcher(grammar: str, lltokenizer: Any, params: StructuredOutputsParams) -> Any:
    """A fresh ``LLMatcher`` (the costly part of a compile: lexer and parser built); ValueError naming the
    field when llguidance reports an error."""
    llg = llguidance()
    matcher = llg.LLMatcher(lltokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise ValueError(f"structured_outputs.{params.kind}: {_first_line(matcher.get_error())}")
    return matcher


def _first_line(message: str) -> str:
    """What is wrong, from an llguidance message: its lines without the excerpts and carets that point
    into the grammar (``   1 | start: /[a-/``), joined, at most 500 characters."""
    lines = [line.strip() for line in str(message).splitlines()]
    kept = [line for line in lines if line and set(line) - {"^", " "} and not _EXCERPT.match(line)]
    return " ".join(kept[:4])[:500]
