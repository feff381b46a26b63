"""Prompt templates: ``{name}`` and ``{name.field}`` fields filled from a run's inputs and earlier results.

``{{`` and ``}}`` are literal braces (so a template may hold JSON). A field names a run input or a step
(its output); ``.field`` reads a key of a dict output (or an index of a list output), repeatedly. A dict or
list value is rendered as JSON, anything else with ``str``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


class TemplateError(ValueError):
    """A template names a value the run does not have (or a field its value does not have)."""


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    head, *rest = path.split(".")
    if head not in values:
        raise TemplateError(f"template field {{{path}}}: no input or step result named {head!r}; "
                            f"known: {sorted(values)}")
    value = values[head]
    for part in rest:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"template field {{{path}}}: {part!r} is not in the value of {head!r}")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class Template:
    """A text with ``{name}`` fields; ``render(values)`` fills them."""

    def __init__(self, text: str) -> None:
        """Parse ``text``; a lone ``{`` or ``}`` that is not a field is kept as is."""
        if not isinstance(text, str):
            raise TypeError(f"template must be a str, got {type(text).__name__}")
        self.text = text
        self.paths: tuple[str, ...] = tuple(m.group(1) for m in _FIELD.finditer(text) if m.group(1))

    @property
    def fields(self) -> tuple[str, ...]:
        """The input or step names the template reads (the first part of each field), in order, once each."""
        return tuple(dict.fromkeys(p.split(".")[0] for p in self.paths))

    def render(self, values: Mapping[str, Any]) -> str:
        """The text with every field replaced; ``TemplateError`` names a missing one."""
        def replace(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return m.group(0)[0]
            return _as_text(_lookup(values, m.group(1)))
        return _FIELD.sub(replace, self.text)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"
