"""A pipeline defined in YAML, without code.

```yaml
name: support
budget: {max_tokens: 4000, max_seconds: 120}
steps:
  - {name: topic, kind: select, prompt: "Question: {question}\\nTopic:", labels: [" billing", " technical"]}
  - {name: docs, kind: retrieval, index: kb, query: "{question}", k: 2}
  - name: answer
    kind: model                      # prompt: ... or messages: [{role: user, content: ...}]
    messages: [{role: user, content: "Using {docs}, answer: {question}"}]
    params: {max_tokens: 64, temperature: 0}   # SamplingParams fields, structured_outputs included
    backend: primary                 # a Gateway backend name
    retries: 1                       # policy: retries, backoff_s, max_backoff_s, timeout_s, cache
    fallback: {backend: fallback}    # or {value: "..."}
  - {name: final, kind: function, function: pick}   # looked up in functions=
edges:                               # optional: without it, the steps run in the order listed
  - {from: topic, to: docs}
  - {from: topic, to: answer, when: " billing"}     # when: a label or a list of labels
```
Retrieval indexes and functions are passed by name (``indexes=``, ``functions=``): code stays in code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.pipeline.budget import Budget
from bastion.pipeline.edges import Edge
from bastion.pipeline.function_step import FunctionStep
from bastion.pipeline.model_step import ModelStep
from bastion.pipeline.policy import Fallback, StepPolicy
from bastion.pipeline.result import PipelineError
from bastion.pipeline.retrieval import RetrievalStep
from bastion.pipeline.select import SelectStep
from bastion.pipeline.step import Step

if TYPE_CHECKING:
    from bastion.pipeline.pipeline import Pipeline
    from bastion.pipeline.retrieval import DocumentIndex

_POLICY_KEYS = ("retries", "backoff_s", "max_backoff_s", "timeout_s", "cache")
_STEP_KEYS = {
    "model": {"prompt", "messages", "params", "backend", "output"},
    "select": {"prompt", "labels", "backend", "chat", "length_normalize"},
    "retrieval": {"query", "index", "k"},
    "function": {"function"},
}


def _policy(spec: dict[str, Any], where: str) -> StepPolicy:
    fallback = spec.pop("fallback", None)
    if fallback is not None and (not isinstance(fallback, dict) or set(fallback) - {"backend", "value"}
                                 or len(fallback) != 1):
        raise PipelineError(f"{where}.fallback must be {{backend: NAME}} or {{value: VALUE}}, got {fallback!r}")
    kwargs = {k: spec.pop(k) for k in _POLICY_KEYS if k in spec}
    return StepPolicy(**kwargs, fallback=Fallback(**fallback) if fallback is not None else None)


def _step(spec: Any, i: int, functions: Mapping[str, Callable[..., Any]],
          indexes: Mapping[str, DocumentIndex]) -> Step:
    where = f"steps[{i}]"
    if not isinstance(spec, dict) or "name" not in spec or "kind" not in spec:
        raise PipelineError(f"{where} must be a mapping with name and kind, got {spec!r}")
    spec = dict(spec)
    name, kind = spec.pop("name"), spec.pop("kind")
    where = f"steps[{i}] ({name})"
    if kind not in _STEP_KEYS:
        raise PipelineError(f"{where}.kind must be one of {sorted(_STEP_KEYS)}, got {kind!r}")
    policy = _policy(spec, where)
    unknown = set(spec) - _STEP_KEYS[kind]
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {sorted(unknown)} for a {kind} step")
    try:
        if kind == "model":
            return ModelStep(name, policy=policy, **spec)
        if kind == "select":
            return SelectStep(name, spec.pop("prompt"), spec.pop("labels"), policy=policy, **spec)
        if kind == "retrieval":
            index = spec.pop("index")
            if index not in indexes:
                raise PipelineError(f"{where}.index: no index named {index!r} was passed (indexes=)")
            return RetrievalStep(name, spec.pop("query"), indexes[index], policy=policy, **spec)
        fn = spec.pop("function")
        if fn not in functions:
            raise PipelineError(f"{where}.function: no function named {fn!r} was passed (functions=)")
        return FunctionStep(name, functions[fn], policy=policy)
    except (KeyError, TypeError, ValueError) as e:
        raise PipelineError(f"{where}: {e}") from e


def _edge(spec: Any, i: int) -> Edge:
    if not isinstance(spec, dict) or "from" not in spec or "to" not in spec or set(spec) - {"from", "to", "when"}:
        raise PipelineError(f"edges[{i}] must be {{from: STEP, to: STEP[, when: LABEL(S)]}}, got {spec!r}")
    when = spec.get("when")
    if isinstance(when, list):
        when = tuple(str(x) for x in when)
    elif when is not None:
        when = str(when)
    return Edge(str(spec["from"]), str(spec["to"]), when)


def load_pipeline(source: str | os.PathLike[str], *, functions: Mapping[str, Callable[..., Any]],
                  indexes: Mapping[str, DocumentIndex]) -> Pipeline:
    """Parse YAML text (or the file at ``source``) into a ``Pipeline``; PipelineError naming the bad part."""
    import yaml

    from bastion.pipeline.pipeline import Pipeline

    text = Path(source).read_text(encoding="utf-8") if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))) else str(source)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PipelineError(f"pipeline YAML does not parse: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not isinstance(doc.get("steps"), list):
        raise PipelineError("pipeline YAML must be a mapping with a name and a list of steps")
    unknown = set(doc) - {"name", "steps", "edges", "budget"}
    if unknown:
        raise PipelineError(f"pipeline YAML: unknown key(s) {sorted(unknown)}")
    steps = [_step(s, i, functions, indexes) for i, s in enumerate(doc["steps"])]
    edges = [_edge(e, i) for i, e in enumerate(doc["edges"])] if doc.get("edges") is not None else None
    try:
        budget = Budget(**doc["budget"]) if doc.get("budget") else None
    except (TypeError, ValueError) as e:
        raise PipelineError(f"budget: {e}") from e
    return Pipeline(doc["name"], steps, edges, budget=budget)
