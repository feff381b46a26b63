"""Output-only guard: the complete output must be JSON valid against a JSON Schema (jsonschema)."""

from __future__ import annotations

import json
from typing import Any

from bastion.resilience.detectors import Finding
from bastion.resilience.guardrails.base import GuardDecision, Stage, validate_action


class JsonSchemaGuard:
    """Flags output that is not JSON (``INVALID_JSON``, at the parser's offset) or breaks ``schema``
    (one ``SCHEMA`` finding per violation, its JSON path in the detail). Blocks by default; supports
    ``block`` and ``log``. Streaming runs it once, on the finished output.
    """

    name = "json_schema"
    needs_full_text = True
    stages = frozenset({"output"})

    def __init__(self, schema: dict[str, Any], action: str = "block", name: str | None = None,
                 max_findings: int = 20) -> None:
        """Check outputs against ``schema`` (a dict: jsonschema reads no other mapping as a JSON object); a
        malformed schema is a ValueError naming ``schema``."""
        import jsonschema  # imported here so the other guards do not pay for it

        self.action = validate_action(action, ("block", "log"))
        validator_cls = jsonschema.validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"schema: not a valid JSON Schema: {exc.message}") from exc
        self._validator = validator_cls(schema)
        self.name = name or self.name
        self.max_findings = max_findings

    def check(self, text: str, stage: Stage) -> GuardDecision:
        """Parse ``text`` and validate it (input-stage texts are always allowed)."""
        if stage not in self.stages:
            return GuardDecision(self.name, stage, "allow", [], text)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            findings = [Finding("INVALID_JSON", exc.pos, len(text), exc.msg)]
        else:
            errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.absolute_path))
            findings = [Finding("SCHEMA", 0, len(text), f"{e.json_path}: {e.message}")
                        for e in errors[:self.max_findings]]
        if not findings:
            return GuardDecision(self.name, stage, "allow", [], text)
        return GuardDecision(self.name, stage, self.action, findings, text)
