"""Customer service as a pipeline: classify -> retrieve -> summarize -> respond -> quality check (which can
send the answer back for one revision) -> final, on the embedded SmolLM2 behind a Gateway.

    python examples/customer_service.py "My card was charged twice for one order."

Prints the per-stage latency table of a first run and of a second, cached run (no model call).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import bastion
from bastion.pipeline import (
    DocumentIndex,
    Edge,
    FunctionStep,
    ModelStep,
    Pipeline,
    ResultCache,
    RetrievalStep,
    SelectStep,
    sequence,
)

DOCS = Path(__file__).parent / "data" / "support_docs"
GREEDY = {"temperature": 0.0}


def format_docs(retrieve: list[dict]) -> str:
    """The retrieved articles as plain text for the prompts."""
    return "\n".join(f"- {d['title']}: {d['text']}" for d in retrieve) or "- (no article found)"


def final_answer(respond: str, revise: str | None = None) -> str:
    """The revised answer when the check asked for one, else the first answer."""
    return revise or respond


def build_pipeline(index: DocumentIndex, *, max_tokens: int = 48) -> Pipeline:
    """The customer-service pipeline over ``index``; ``max_tokens`` caps each generation."""
    params = {"max_tokens": max_tokens, **GREEDY}
    steps = [
        SelectStep("classify", "Classify this customer message as billing, technical or shipping.\n"
                               "Message: {message}", ["billing", "technical", "shipping"], chat=True),
        RetrievalStep("retrieve", "{classify} {message}", index, k=2),
        FunctionStep("articles", format_docs),
        ModelStep("summarize", messages=[{"role": "user", "content":
                  "Summarize what these help articles say about a {classify} problem, in one sentence.\n{articles}"}],
                  params=params),
        ModelStep("respond", messages=[
            {"role": "system", "content": "You are a helpful customer-service agent. Facts: {summarize}"},
            {"role": "user", "content": "{message}"}], params=params),
        SelectStep("check", "Customer: {message}\nAgent: {respond}\n"
                            "Does the agent's reply answer the customer politely? Answer yes or no.",
                   ["yes", "no"], chat=True),
        ModelStep("revise", messages=[
            {"role": "system", "content": "You are a helpful customer-service agent. Facts: {summarize}"},
            {"role": "user", "content": "{message}"},
            {"role": "assistant", "content": "{respond}"},
            {"role": "user", "content": "Please answer again, more precisely and politely, using the facts."}],
            params=params),
        FunctionStep("final", final_answer),
    ]
    edges = [*sequence("classify", "retrieve", "articles", "summarize", "respond", "check"),
             Edge("check", "revise", "no"), Edge("check", "final"), Edge("revise", "final")]
    return Pipeline("customer_service", steps, edges)


async def main(message: str) -> None:
    """Run the pipeline twice (the second run from the cache) and print both latency tables."""
    engine = bastion.AsyncLLM()
    with tempfile.TemporaryDirectory() as tmp:
        gateway = bastion.Gateway(backends={"primary": engine}, audit=bastion.AuditLog(Path(tmp) / "audit.jsonl"))
        cache = ResultCache(Path(tmp) / "cache.sqlite")
        pipeline = build_pipeline(DocumentIndex.from_directory(DOCS))
        try:
            for label in ("first run", "second run (cached)"):
                result = await pipeline.run({"message": message}, gateway=gateway, cache=cache, user="demo")
                print(f"== {label}: {result.status}, run {result.run_id}")
                print(result.latency_table())
            print("\ncategory:", result.outputs["classify"], "| check:", result.outputs["check"],
                  "| scores:", result.steps["check"].details.get("scores"))
            print("answer:", result.outputs["final"])
            print("prefix cache hits (tokens):", engine.stats()["prefix_cache_hits"])
        finally:
            cache.close()
            await gateway.aclose()
            await engine.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "My card was charged twice for one order."))
