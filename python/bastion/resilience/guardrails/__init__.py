"""Offline guardrails: one module per family, a pipeline, and a streaming hold-back guard.

Every built-in guard runs without a model or network access. The secret and PII guards use the
detectors of ``bastion.resilience.detectors``, the same ones the audit trail redacts with. Heavier
detectors (Presidio, LLM Guard) plug in through :class:`PluggableGuard` as optional extras.
"""

from __future__ import annotations

from bastion.resilience.detectors import (
    SECRET_PATTERNS,
    Finding,
    apply_redactions,
    detection_view,
    iban_valid,
    luhn_valid,
    placeholder,
)
from bastion.resilience.guardrails.banned import BannedSubstringsGuard, RegexGuard
from bastion.resilience.guardrails.base import Action, GuardDecision, Guardrail, SpanGuard, Stage
from bastion.resilience.guardrails.injection import INJECTION_PATTERNS, PromptInjectionGuard
from bastion.resilience.guardrails.invisible import InvisibleTextGuard
from bastion.resilience.guardrails.json_schema import JsonSchemaGuard
from bastion.resilience.guardrails.pii import PiiGuard
from bastion.resilience.guardrails.pipeline import GuardrailPipeline, PipelineResult, default_pipeline
from bastion.resilience.guardrails.pluggable import PluggableGuard
from bastion.resilience.guardrails.secrets import SecretsGuard
from bastion.resilience.guardrails.streaming import StreamingOutputGuard
from bastion.resilience.guardrails.token_limit import TokenLimitGuard

__all__ = [
    "INJECTION_PATTERNS", "SECRET_PATTERNS", "Action", "BannedSubstringsGuard", "Finding", "GuardDecision",
    "Guardrail", "GuardrailPipeline", "InvisibleTextGuard", "JsonSchemaGuard", "PiiGuard", "PipelineResult",
    "PluggableGuard", "PromptInjectionGuard", "RegexGuard", "SecretsGuard", "SpanGuard", "Stage",
    "StreamingOutputGuard", "TokenLimitGuard", "apply_redactions", "default_pipeline", "detection_view",
    "iban_valid", "luhn_valid", "placeholder",
]
