"""Tool calling for chat: tools into the prompt, a schema that constrains the answer, calls out of it.

The tools are described in the system message (llama.cpp's generic format), which the model's own
chat template renders like any other message; the answer is constrained by a JSON schema built
from the tools' parameter schemas, so it is valid by construction, whatever tool format (if any)
the model was trained on:

* ``tool_choice="required"`` or a named function: ``{"tool_calls": [{"name", "arguments"}, ...]}``
  with at least one call (exactly the named function when one is named);
* ``"auto"``: that, or ``{"response": "<text for the user>"}``;
* ``"none"`` (or no tools): the answer is not constrained and tools are not offered.

The answer is then parsed into OpenAI's ``tool_calls`` (ids ``call_<hex>``, arguments as a JSON
string) with ``finish_reason="tool_calls"``, or into plain content for a ``response``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from bastion.server.errors import APIError

ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request uses its tools: the mode, the answer's schema and the tools offered."""

    mode: ToolMode
    tools: list[dict[str, Any]]  # OpenAI function objects: {"name", "description", "parameters"}
    schema: dict[str, Any] | None  # None when the answer is not constrained


def plan_tools(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> ToolPlan:
    """Check the tools and the choice (400 naming the field) and build the answer's schema."""
    functions = [t["function"] for t in tools or []]
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise APIError(400, "tools: function names must be unique", param="tools")
    if tool_choice is None:
        tool_choice = "auto" if functions else "none"
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name")
        if name not in names:
            raise APIError(400, f"tool_choice: no tool named {name!r} (tools: {names})", param="tool_choice")
        chosen = [f for f in functions if f["name"] == name]
        return ToolPlan("named", chosen, _calls_schema(chosen))
    if tool_choice == "none" or not functions:
        if tool_choice == "required":
            raise APIError(400, "tool_choice: 'required' needs at least one tool", param="tool_choice")
        return ToolPlan("none", [], None)
    calls = _calls_schema(functions)
    if tool_choice == "required":
        return ToolPlan("required", functions, calls)
    either = {"anyOf": [calls, {"type": "object", "properties": {"response": {"type": "string"}},
                                "required": ["response"], "additionalProperties": False}]}
    return ToolPlan("auto", functions, either)


def _calls_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    one_call = [{"type": "object", "properties": {"name": {"const": f["name"]},
                                                  "arguments": f.get("parameters") or {"type": "object"}},
                 "required": ["name", "arguments"], "additionalProperties": False} for f in functions]
    call = one_call[0] if len(one_call) == 1 else {"anyOf": one_call}
    return {"type": "object", "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1}},
            "required": ["tool_calls"], "additionalProperties": False}


def tools_system_text(plan: ToolPlan) -> str:
    """The system-message text offering the tools to a model whose template does not know them."""
    listing = "\n".join(json.dumps({"name": f["name"], "description": f.get("description", ""),
                                    "parameters": f.get("parameters") or {"type": "object"}}, ensure_ascii=False)
                        for f in plan.tools)
    how = ('Answer with JSON only: {"tool_calls": [{"name": ..., "arguments": {...}}]} to call tools'
           + (', or {"response": "..."} to answer the user directly.' if plan.mode == "auto" else "."))
    return f"You can call these tools:\n{listing}\n{how}"


def with_tools(messages: list[dict[str, Any]], plan: ToolPlan) -> list[dict[str, Any]]:
    """The conversation with the tools offered in its system message (added to the first one, or a new one)."""
    if plan.mode == "none":
        return messages
    text = tools_system_text(plan)
    if messages and messages[0]["role"] in ("system", "developer"):
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def parse_answer(text: str, plan: ToolPlan) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(content, tool_calls) of a constrained answer; content only when the model answered directly.

    An answer that is not the schema's JSON (cut by max_tokens) is returned as content, unparsed.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(data, dict) and isinstance(data.get("response"), str) and plan.mode == "auto":
        return data["response"], None
    calls = data.get("tool_calls") if isinstance(data, dict) else None
    if not isinstance(calls, list):
        return text, None
    return None, [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                   "function": {"name": c.get("name"), "arguments": json.dumps(c.get("arguments", {}),
                                                                               ensure_ascii=False)}}
                  for c in calls if isinstance(c, dict)]


def render_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the chat template gets it: an assistant's earlier tool calls become its content
    (the JSON the model produced), a tool result keeps its text."""
    calls = message.get("tool_calls")
    if message["role"] == "assistant" and calls and not message.get("content"):
        payload = {"tool_calls": [{"name": c["function"]["name"], "arguments": _arguments(c["function"])}
                                  for c in calls]}
        return {"role": "assistant", "content": json.dumps(payload, ensure_ascii=False)}
    return {"role": message["role"], "content": message.get("content") or ""}


def _arguments(function: dict[str, Any]) -> Any:
    try:
        return json.loads(function.get("arguments") or "{}")
    except ValueError:
        return function.get("arguments")
