"""Pipelines of model calls and other steps: sequence, routing by label, fork/join, per-step retries,
timeouts, fallbacks and a content-hash cache, per-run budgets, one trace and one audit trail per run.

```python
from bastion.pipeline import ModelStep, FunctionStep, Pipeline, fork, join
p = Pipeline("qa", [ModelStep("answer", "Q: {question}\\nA:", params={"max_tokens": 32})])
result = await p.run({"question": "What is the capital of France?"}, gateway=gateway)
print(result.status, result.outputs["answer"], result.latency_table())
```
"""

from bastion.pipeline.budget import Budget
from bastion.pipeline.cache import ResultCache, content_key
from bastion.pipeline.edges import Edge, fork, join, route, sequence
from bastion.pipeline.function_step import FunctionStep
from bastion.pipeline.model_step import ModelStep
from bastion.pipeline.pipeline import Pipeline
from bastion.pipeline.policy import Fallback, StepPolicy
from bastion.pipeline.registry import PipelineRegistry
from bastion.pipeline.result import BudgetExceeded, PipelineError, RunResult, StepResult
from bastion.pipeline.retrieval import Document, DocumentIndex, RetrievalStep
from bastion.pipeline.select import SelectStep
from bastion.pipeline.step import Step, StepOutput
from bastion.pipeline.template import Template, TemplateError
from bastion.pipeline.tracing import PipelineTracer

__all__ = [
    "Budget", "BudgetExceeded", "Document", "DocumentIndex", "Edge", "Fallback", "FunctionStep", "ModelStep",
    "Pipeline", "PipelineError", "PipelineRegistry", "PipelineTracer", "ResultCache", "RetrievalStep", "RunResult",
    "SelectStep", "Step", "StepOutput", "StepPolicy", "StepResult", "Template", "TemplateError", "content_key",
    "fork", "join", "route", "sequence",
]
