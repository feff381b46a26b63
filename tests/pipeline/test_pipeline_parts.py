"""Pipeline parts without a model: templates, edges and routing, the cache, the YAML form, the Gateway route."""

from __future__ import annotations

import pytest
from bastion.pipeline import (
    Document,
    DocumentIndex,
    Edge,
    FunctionStep,
    Pipeline,
    PipelineError,
    ResultCache,
    Template,
    TemplateError,
    content_key,
)


def test_template_fields_and_escapes():
    t = Template('{{"q": "{question}"}} {doc.title} {hits.0}')
    assert t.fields == ("question", "doc", "hits")
    assert t.render({"question": "hi", "doc": {"title": "T"}, "hits": ["a"]}) == '{"q": "hi"} T a'
    with pytest.raises(TemplateError, match="no input or step result named 'question'"):
        t.render({})


async def test_routing_runs_one_branch_and_joins():
    steps = [FunctionStep("label", lambda kind: kind), FunctionStep("a", lambda: "A"), FunctionStep("b", lambda: "B"),
             FunctionStep("end", lambda a=None, b=None: a or b)]
    edges = [Edge("label", "a", "x"), Edge("label", "b", ("y", "z")), Edge("a", "end"), Edge("b", "end")]
    p = Pipeline("route", steps, edges)
    result = await p.run({"kind": "z"})
    assert result.status == "completed" and result.outputs["end"] == "B"
    assert result.steps["a"].status == "skipped"
    with pytest.raises(PipelineError, match="cycle"):
        Pipeline("loop", steps[:2], [Edge("label", "a"), Edge("a", "label")])


def test_cache_ttl_and_sqlite_tier(tmp_path):
    now = [0.0]
    cache = ResultCache(tmp_path / "c.sqlite", ttl_s=10, clock=lambda: now[0])
    key = content_key({"kind": "function"}, {"x": 1})
    assert key != content_key({"kind": "function"}, {"x": 2})
    cache.put(key, {"output": 3})
    cache.clear_memory()
    assert cache.get(key) == {"output": 3}
    now[0] = 11.0
    assert cache.get(key) is None
    cache.close()


def test_yaml_form_builds_a_pipeline():
    index = DocumentIndex([Document("a", "Refunds", "money back to the card"), Document("b", "Login", "password")])
    p = Pipeline.from_yaml("""
name: support
budget: {max_tokens: 500}
steps:
  - {name: topic, kind: select, prompt: "Q: {question}\\nTopic:", labels: [" billing", " login"]}
  - {name: docs, kind: retrieval, index: kb, query: "{question}", k: 1}
  - name: answer
    kind: model
    messages: [{role: user, content: "{docs} {question}"}]
    params: {max_tokens: 8, temperature: 0}
    retries: 2
    fallback: {value: "sorry"}
  - {name: final, kind: function, function: pick}
edges:
  - {from: topic, to: docs, when: [" billing", " login"]}
  - {from: docs, to: answer}
  - {from: answer, to: final}
""", functions={"pick": lambda answer: answer}, indexes={"kb": index})
    assert [s.kind for s in p.steps] == ["select", "retrieval", "model", "function"]
    assert p.budget.max_tokens == 500 and p.step("answer").policy.retries == 2
    assert index.search("refund to my card", k=1)[0]["id"] == "a"
    with pytest.raises(PipelineError, match="no function named 'nope'"):
        Pipeline.from_yaml("name: x\nsteps:\n  - {name: f, kind: function, function: nope}\n")


async def test_gateway_route_pins_a_backend(audit_log):
    import bastion

    from tests.gateway.fault_backends import ScriptedBackend

    a, b = ScriptedBackend("a"), ScriptedBackend("b")
    gateway = bastion.Gateway(backends={"a": a, "b": b}, audit=audit_log)
    result = await gateway.generate("hi", {"max_tokens": 3}, backends=["b"])
    assert result.backend == "b" and not a.requests
    with pytest.raises(ValueError, match="unknown backend"):
        await gateway.generate("hi", backends=["c"])


def test_run_sync_without_a_running_loop():
    async def double(x: int) -> int:
        return 2 * x

    result = Pipeline("sync", [FunctionStep("d", double), FunctionStep("s", lambda d: d + 1)]).run_sync({"x": 4})
    assert result.status == "completed" and result.outputs == {"d": 8, "s": 9}
    assert "(run)" in result.latency_table()
