"""``StructuredOutputsParams``: what a request's output must match (vLLM's names).

Exactly one of ``json`` (a JSON schema), ``regex``, ``choice`` (one of these strings), ``grammar`` (a
Lark or GBNF grammar) or ``json_object`` (any JSON object) is set. The shape of the value is checked
here, at construction; whether the grammar library accepts it (a schema keyword it lacks, a regex that
does not parse) is checked by the engine's ``InputProcessor`` against the model's tokenizer. Either way
a bad value raises ``ValueError`` naming ``structured_outputs.<field>`` before anything is queued.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

StructuredKind = Literal["json", "regex", "choice", "grammar", "json_object"]
KINDS: tuple[str, ...] = ("json", "regex", "choice", "grammar", "json_object")


def _schema_text(value: Any) -> str:
    """The JSON text of a schema given as a str or a dict; ValueError naming ``structured_outputs.json``."""
    if isinstance(value, str):
        try:
            schema = _json.loads(value)
        except ValueError as exc:
            raise ValueError(f"structured_outputs.json: not valid JSON: {exc}") from None
    elif isinstance(value, Mapping):
        schema = value
    else:
        raise ValueError(f"structured_outputs.json must be a JSON schema (a str or a dict), got {type(value).__name__}")
    if not isinstance(schema, (Mapping, bool)):
        raise ValueError(f"structured_outputs.json: a JSON schema is an object (or a bool), got {type(schema).__name__}")
    try:
        return _json.dumps(schema, allow_nan=False)  # key order kept: it is the order properties are generated in
    except (TypeError, ValueError) as exc:
        raise ValueError(f"structured_outputs.json: not JSON-serialisable: {exc}") from None


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Constrain a request's output (set exactly one field).

    Attributes:
        json: a JSON schema, as a dict or its JSON text; the output is JSON matching it.
        regex: a regular expression (Rust ``regex`` syntax) the whole output matches.
        choice: the output is exactly one of these strings.
        grammar: a context-free grammar in Lark syntax (llguidance's) or llama.cpp's GBNF.
        json_object: True for any JSON object (OpenAI's ``response_format={"type": "json_object"}``).
    """

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | tuple[str, ...] | None = None
    grammar: str | None = None
    json_object: bool = False

    def __post_init__(self) -> None:
        """Check that exactly one field is set and that its value has the right shape."""
        if not isinstance(self.json_object, bool):
            raise ValueError(f"structured_outputs.json_object must be a bool, got {type(self.json_object).__name__}")
        chosen = [name for name in KINDS if (getattr(self, name) is not None if name != "json_object"
                                              else self.json_object)]
        if len(chosen) != 1:
            got = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"structured_outputs: set exactly one of {', '.join(KINDS)} (got {got})")
        kind = chosen[0]
        if kind == "json":
            spec = _schema_text(self.json)
            if not isinstance(self.json, str):  # a copy of the caller's dict, which may change after this
                object.__setattr__(self, "json", _json.loads(spec))
        elif kind in ("regex", "grammar"):
            value = getattr(self, kind)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"structured_outputs.{kind} must be a non-empty str, got {value!r}"[:200])
            spec = value
        elif kind == "choice":
            spec = self._choice_text()
        else:
            spec = '{"type": "object"}'
        # not dataclass fields: dataclasses.asdict (the audit record's sampling block) leaves them out
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_spec", spec)

    def _choice_text(self) -> str:
        choice = self.choice
        if not isinstance(choice, (list, tuple)) or not choice:
            raise ValueError(f"structured_outputs.choice must be a non-empty list of str, got {choice!r}"[:200])
        for i, item in enumerate(choice):
            if not isinstance(item, str) or not item:
                raise ValueError(f"structured_outputs.choice[{i}] must be a non-empty str, got {item!r}"[:200])
        object.__setattr__(self, "choice", list(dict.fromkeys(choice)))  # a copy: the caller's list may change
        return _json.dumps(self.choice)

    def __hash__(self) -> int:
        """Hash of the constraint (its fields may be a dict or a list, which do not hash themselves)."""
        return hash((self.kind, self.spec))

    @property
    def kind(self) -> StructuredKind:
        """Which field is set: "json", "regex", "choice", "grammar" or "json_object"."""
        return cast(StructuredKind, self.__dict__["_kind"])  # set in __post_init__

    @property
    def spec(self) -> str:
        """The constraint as text: the schema's JSON, the regex, the grammar, or the choices as a JSON list.

        ``(kind, spec)`` identifies the constraint (the compiled-grammar cache key, with the tokenizer).
        """
        return cast(str, self.__dict__["_spec"])  # set in __post_init__

    @property
    def schema(self) -> dict[str, Any] | bool | None:
        """The JSON schema as a parsed value (for "json" and "json_object"), else None."""
        if self.kind not in ("json", "json_object"):
            return None
        value: dict[str, Any] | bool = _json.loads(self.spec)
        return value

    @classmethod
    def coerce(cls, value: Any) -> StructuredOutputsParams | None:
        """``value`` as StructuredOutputsParams: None, an instance, or a dict of its fields (JSON round trips)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(KINDS))
            if unknown:
                raise ValueError(f"structured_outputs: unknown field(s) {', '.join(map(str, unknown))}; "
                                 f"expected {', '.join(KINDS)}")
            fields = {k: v for k, v in value.items() if not (k == "json_object" and v is None)}
            return cls(**fields)
        raise ValueError(f"structured_outputs must be StructuredOutputsParams, a dict of its fields or None, "
                         f"got {type(value).__name__}")
