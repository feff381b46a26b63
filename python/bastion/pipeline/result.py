"""What a run returns: every step's output, status, latency and tokens, and the run's status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

StepStatus = Literal["ok", "cached", "fallback", "failed", "skipped", "not_run", "cancelled"]
RunStatus = Literal["completed", "failed", "budget_exceeded"]


class PipelineError(Exception):
    """A pipeline that cannot be built or run as defined (unknown step, cycle, bad YAML, ...)."""


class BudgetExceeded(Exception):
    """A run's token or time budget ran out (the run stops with status ``budget_exceeded``)."""


@dataclass
class StepResult:
    """One step of a run.

    ``status``: ok, cached (taken from the result cache, no model call), fallback (its fallback answered),
    failed, skipped (no active edge led to it), not_run (the run stopped first), cancelled (in flight when
    the run stopped). ``latency_s`` is wall time including retries; ``attempts`` counts tries;
    ``audit_ids`` are the Gateway's records of its model calls; ``backend`` the one that answered;
    ``details`` what a step adds (a select step's label scores).
    """

    name: str
    kind: str
    status: StepStatus
    output: Any = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    backend: str | None = None
    audit_ids: list[str] = field(default_factory=list)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Prompt plus output tokens."""
        return self.prompt_tokens + self.output_tokens


@dataclass
class RunResult:
    """One run of a pipeline: ``status`` completed / failed / budget_exceeded, with ``reason`` when not
    completed; ``steps`` in definition order; ``outputs`` the outputs of the steps that produced one."""

    run_id: str
    pipeline: str
    status: RunStatus
    steps: dict[str, StepResult]
    latency_s: float
    reason: str | None = None
    audit_id: str | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        """Step name -> output, for the steps that have one (ok, cached, fallback)."""
        return {n: s.output for n, s in self.steps.items() if s.status in ("ok", "cached", "fallback")}

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every model call of the run."""
        return sum(s.prompt_tokens for s in self.steps.values())

    @property
    def output_tokens(self) -> int:
        """Output tokens of every model call of the run."""
        return sum(s.output_tokens for s in self.steps.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a job's result, a server's response body)."""
        body = asdict(self)
        body["steps"] = [asdict(s) for s in self.steps.values()]
        return body

    def latency_table(self) -> str:
        """A per-step table: status, latency, tokens, backend."""
        rows = [("step", "kind", "status", "latency_s", "prompt_tok", "output_tok", "backend")]
        rows += [(s.name, s.kind, s.status, f"{s.latency_s:.3f}", str(s.prompt_tokens), str(s.output_tokens),
                  s.backend or "-") for s in self.steps.values()]
        rows.append(("(run)", "", self.status, f"{self.latency_s:.3f}", str(self.prompt_tokens),
                     str(self.output_tokens), ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
