"""Adapter for heavier, optional guard backends (Presidio, LLM Guard) and for any detector callable.

Optional packages are imported only when an adapter is built, and a missing one is a clear ImportError
naming the package to install. bastion itself downloads nothing: the Presidio adapter uses Presidio's
pattern recognizers only (no spaCy model), and an LLM Guard scanner that needs a model must find it in
the local cache (set ``HF_HUB_OFFLINE=1`` to make a missing model an error instead of a download).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from bastion.resilience.detectors import Detector, Finding
from bastion.resilience.guardrails.base import BOTH_STAGES, SpanGuard, validate_action

PRESIDIO_PATTERN_RECOGNIZERS = ("CreditCardRecognizer", "IbanRecognizer", "EmailRecognizer", "IpRecognizer")


def require_optional(module: str, distribution: str) -> ModuleType:
    """Import ``module`` or raise an ImportError telling which ``distribution`` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this guard needs the optional package {distribution!r} "
                          f"(pip install {distribution}); bastion never installs or downloads it") from exc


class PluggableGuard(SpanGuard):
    """A guard around any ``detect(text) -> findings`` callable, with the usual action and stages.

    Build one directly for an in-house detector, or with :meth:`presidio` / :meth:`llm_guard`.
    """

    def __init__(self, name: str, detect: Detector, action: str = "block", stages: Iterable[str] = BOTH_STAGES,
                 uses_detection_view: bool = True) -> None:
        """``uses_detection_view=False`` hands the raw text to ``detect`` (offsets are then raw too)."""
        if not name:
            raise ValueError("name: a pluggable guard needs a non-empty name")
        if not callable(detect):
            raise ValueError("detect: must be a callable str -> iterable of Finding")
        super().__init__(action, stages, name)
        self._detect = detect
        self.uses_detection_view = uses_detection_view

    def find(self, view: str) -> list[Finding]:
        """Whatever the detector reports."""
        return list(self._detect(view))

    @classmethod
    def presidio(cls, recognizers: Sequence[str] = PRESIDIO_PATTERN_RECOGNIZERS, action: str = "redact",
                 stages: Iterable[str] = BOTH_STAGES, name: str = "presidio") -> PluggableGuard:
        """Presidio's predefined *pattern* recognizers (by class name), which need no NLP model."""
        module = require_optional("presidio_analyzer.predefined_recognizers", "presidio-analyzer")
        instances = []
        for recognizer in recognizers:
            factory = getattr(module, recognizer, None)
            if factory is None:
                raise ValueError(f"recognizers: presidio has no recognizer named {recognizer!r}")
            instances.append(factory())

        def detect(text: str) -> list[Finding]:
            """Findings of every recognizer, with Presidio's score in the detail."""
            return [Finding(result.entity_type, result.start, result.end, f"presidio score {result.score:.2f}")
                    for recognizer in instances
                    for result in recognizer.analyze(text, recognizer.supported_entities, None)]

        return cls(name, detect, action, stages)

    @classmethod
    def llm_guard(cls, scanner: Any, action: str = "block", stages: Iterable[str] = ("input",),
                  name: str | None = None, **scanner_kwargs: Any) -> PluggableGuard:
        """An LLM Guard scanner: an instance, or the class name of an input scanner built with
        ``scanner_kwargs``. A text the scanner finds invalid is one finding spanning the text; LLM Guard
        sanitizes whole texts, not spans, so only ``block`` and ``log`` are supported."""
        validate_action(action, ("block", "log"))
        if isinstance(scanner, str):
            module = require_optional("llm_guard.input_scanners", "llm-guard")
            factory = getattr(module, scanner, None)
            if factory is None:
                raise ValueError(f"scanner: llm-guard has no input scanner named {scanner!r}")
            scanner = factory(**scanner_kwargs)
        if not callable(getattr(scanner, "scan", None)):
            raise ValueError("scanner: expected an LLM Guard scanner (an object with scan())")
        kind = type(scanner).__name__.upper()

        def detect(text: str) -> list[Finding]:
            """One whole-text finding when the scanner says the text is invalid."""
            _sanitized, is_valid, risk_score = scanner.scan(text)
            return [] if is_valid else [Finding(kind, 0, len(text), f"llm-guard risk {risk_score:.2f}")]

        return cls(name or f"llm_guard_{kind.lower()}", detect, action, stages, uses_detection_view=False)
