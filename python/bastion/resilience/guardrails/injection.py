"""Prompt-injection heuristics: a curated, documented list of phrasings used to hijack instructions.

This is a cheap first line, not a classifier: it catches the stock phrasings (and their zero-width or
full-width disguises, via the detection view) with very few false positives on ordinary text. Plug a
model-based detector in through :class:`~bastion.resilience.guardrails.pluggable.PluggableGuard` for
paraphrases. In the patterns below a space matches any run of whitespace and matching ignores case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from bastion.resilience.detectors import Finding
from bastion.resilience.guardrails.base import SpanGuard

_VERBS = r"(?:ignore|disregard|forget|override|bypass|skip)"
_SCOPE = r"(?:all |any |the |your |my |these |those )*(?:previous|prior|above|earlier|preceding|former|initial|system)"

# name -> (why it is here, pattern)
INJECTION_PATTERNS: dict[str, tuple[str, str]] = {
    "ignore_instructions": (
        "orders the model to drop the instructions it was given",
        rf"\b{_VERBS} {_SCOPE} (?:instructions?|prompts?|rules|directions|directives|guidelines|context)\b"),
    "reveal_system_prompt": (
        "asks for the hidden system prompt",
        r"\b(?:reveal|show|print|repeat|output|leak|display|tell me) (?:me )?(?:your|the) "
        r"(?:full |entire |exact )?(?:system|hidden|secret|initial|original) (?:prompt|instructions|message)\b"),
    "role_override": (
        "re-casts the model as an unrestricted persona",
        r"\b(?:you are now|from now on,? you are|act as|pretend to be) (?:an? )?"
        r"(?:DAN|unrestricted|unfiltered|uncensored|jailbroken|evil)\b"),
    "mode_switch": (
        "claims to switch on a privileged mode",
        r"\b(?:enable|activate|enter|switch to) (?:developer|god|debug|DAN|jailbreak) mode\b"),
    "do_anything_now": ("the 'DAN' jailbreak family", r"\bdo anything now\b"),
    "no_restrictions": (
        "asks the model to behave as if it had no rules",
        r"\b(?:pretend|imagine|assume) (?:that )?you (?:have|had|are) (?:no|without any?) "
        r"(?:restrictions|rules|filters|limitations|guidelines)\b"),
    "new_instructions": (
        "announces replacement instructions mid-text",
        r"(?:^|\n)\s*(?:new|updated|real|actual) (?:system )?instructions?:"),
    "fake_chat_markup": (
        "chat-template control tokens smuggled into user text",
        r"<\|(?:im_start|im_end|system|assistant|user|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|<</?SYS>>"),
}


def compile_phrase(pattern: str) -> re.Pattern[str]:
    """Compile a documented phrase: literal spaces match any whitespace run, case is ignored."""
    return re.compile(pattern.replace(" ", r"\s+"), re.IGNORECASE)


class PromptInjectionGuard(SpanGuard):
    """Finds known injection phrasings; blocks by default and checks the input stage only."""

    name = "prompt_injection"

    def __init__(self, patterns: Mapping[str, tuple[str, str]] = INJECTION_PATTERNS, action: str = "block",
                 stages: Iterable[str] = ("input",), name: str | None = None) -> None:
        """Use ``patterns`` (name -> (reason, phrase)); extend ``INJECTION_PATTERNS`` to add your own."""
        super().__init__(action, stages, name)
        if not patterns:
            raise ValueError("patterns: at least one pattern is needed")
        self.patterns = {key: (reason, compile_phrase(phrase)) for key, (reason, phrase) in patterns.items()}

    def find(self, view: str) -> list[Finding]:
        """Every match, with the pattern's name and reason as its detail."""
        return [Finding("PROMPT_INJECTION", m.start(), m.end(), f"{key}: {reason}")
                for key, (reason, regex) in self.patterns.items() for m in regex.finditer(view)]
