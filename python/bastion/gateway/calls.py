"""Validation of what a caller hands the Gateway, into one ``Call`` the Gateway serves."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.gateway.trace import RequestTrace, sampling_dict
from bastion.gateway.types import BackendRequest, Message
from bastion.sampling.params import SamplingParams

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass
class Call:
    """One request as the Gateway serves it: validated input plus its trace."""

    trace: RequestTrace
    params: SamplingParams
    prompt: str | None
    messages: list[Message] | None
    priority: int
    stream: bool
    route: list[str] | None = None  # backends to try, in order; None: the Gateway's router decides

    @property
    def operation(self) -> str:
        """GenAI operation name: ``chat`` for messages, ``text_completion`` for a raw prompt."""
        return "chat" if self.messages is not None else "text_completion"

    def input_text(self) -> str:
        """The text guarded, counted and audited as the prompt (message contents joined)."""
        if self.messages is None:
            return self.prompt or ""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def backend_request(self, request_id: str) -> BackendRequest:
        """What a backend (or the shadow) is sent: the input, the text already sent, the tokens still allowed."""
        remaining = self.params.max_tokens - self.trace.output_tokens
        params = dataclasses.replace(self.params, max_tokens=remaining) if remaining != self.params.max_tokens \
            else self.params
        return BackendRequest(request_id, params, self.prompt, self.messages, self.trace.output_text, self.priority,
                              self.trace.tenant)


def normalize_params(params: object) -> SamplingParams:
    """``SamplingParams`` from None, a dict of its fields, or an instance; ValueError/TypeError naming the problem."""
    if params is None:
        return SamplingParams()
    if isinstance(params, SamplingParams):
        return params
    if isinstance(params, Mapping):
        try:
            return SamplingParams(**params)
        except TypeError as e:
            raise ValueError(f"params: {e}") from None
    raise TypeError(f"params must be SamplingParams, a dict of its fields or None, got {type(params).__name__}")


def _check_messages(messages: list[object]) -> list[Message]:
    if not messages:
        raise ValueError("messages: the conversation is empty")
    checked: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TypeError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        if m.get("role") not in _ROLES:
            raise ValueError(f"messages[{i}].role must be one of {sorted(_ROLES)}, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise TypeError(f"messages[{i}].content must be a str, got {type(m.get('content')).__name__}")
        checked.append(dict(m))
    return checked


def _check_identity(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    return value


def _check_route(route: object, known: Sequence[str]) -> list[str] | None:
    if route is None:
        return None
    if isinstance(route, str) or not isinstance(route, Sequence) or not all(isinstance(n, str) for n in route):
        raise TypeError(f"backends must be a list of backend names or None, got {route!r}")
    unknown = [n for n in route if n not in known]
    if unknown or not route:
        raise ValueError(f"backends names unknown backend(s) {unknown}; known: {list(known)}")
    return list(route)


def build_call(prompt_or_messages: object, params: object, *, user: object, tenant: object, metadata: object,
               request_id: object, priority: object, stream: bool, route: object = None,
               known_backends: Sequence[str] = ()) -> Call:
    """Validate everything a caller passed; raise ``ValueError``/``TypeError`` naming the bad argument.

    ``route`` (the caller's ``backends``) must name backends among ``known_backends``.

    The arguments are typed ``object``: they come straight from the caller, unchecked until here.
    """
    if isinstance(prompt_or_messages, str):
        prompt, messages = prompt_or_messages, None
    elif isinstance(prompt_or_messages, list) and all(isinstance(x, int) for x in prompt_or_messages) \
            and prompt_or_messages:
        raise TypeError("prompt: token-id prompts are not supported by the Gateway (remote backends need text)")
    elif isinstance(prompt_or_messages, list):
        prompt, messages = None, _check_messages(prompt_or_messages)
    else:
        raise TypeError(f"prompt_or_messages must be a str or a list of messages, "
                        f"got {type(prompt_or_messages).__name__}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json_metadata: dict[str, Any] = json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON-serializable: {e}") from None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    rid = _check_identity("request_id", request_id) or uuid.uuid4().hex
    sampling_params = normalize_params(params)
    trace = RequestTrace(request_id=rid, user=_check_identity("user", user),
                         tenant=_check_identity("tenant", tenant), metadata=json_metadata,
                         sampling=sampling_dict(sampling_params))
    call = Call(trace, sampling_params, prompt, messages, priority, stream, _check_route(route, known_backends))
    trace.prompt_text = call.input_text()
    return call
