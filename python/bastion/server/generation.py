"""OpenAI completions and chat over the Gateway: a request becomes a ``Plan`` (checked, counted,
one ``SamplingParams`` per choice) before anything is queued; the plan then runs to one response
body or to a stream of server-sent-event chunks.

Every choice is one Gateway request, so rate limits, guardrails, breakers, fallback and the audit
record apply to each exactly as to an in-process call. Usage is exact: prompt tokens as the engine
tokenized them (counted once per prompt), completion tokens as generated, summed over choices.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.gateway.types import GatewayDelta, Message
from bastion.model.tokenizer import Tokenizer
from bastion.sampling.logprobs import TokenLogprobs
from bastion.sampling.params import SamplingParams
from bastion.sampling.structured_params import StructuredOutputsParams
from bastion.server.auth import Principal
from bastion.server.errors import APIError, as_api_error, error_body
from bastion.server.protocol import ChatCompletionRequest, CompletionRequest, NamedToolChoice
from bastion.server.state import ServedModel, ServerState
from bastion.server.tools import ToolPlan, parse_answer, plan_tools, render_message, with_tools

Kind = Literal["completion", "chat"]


@dataclass(frozen=True)
class ChoicePlan:
    """One choice: its input, its sampling parameters and the Gateway request id it runs as."""

    index: int
    prompt_index: int
    input: str | list[Message]
    params: SamplingParams
    request_id: str


@dataclass
class Plan:
    """A checked request, ready to run: nothing is queued until ``run`` or ``stream``."""

    kind: Kind
    response_id: str
    served: ServedModel  # the model the request named
    choices: list[ChoicePlan]
    prompt_tokens: list[int]  # per prompt
    logprobs: int | None
    include_usage: bool
    echo_prompts: list[str] = field(default_factory=list)
    priority: int = 0
    user: str | None = None
    tools: ToolPlan | None = None  # chat with tools: answers are parsed into tool calls

    @property
    def model(self) -> str:
        """The id of the model the request named (what the response says)."""
        return self.served.id


def _stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _params(body: CompletionRequest | ChatCompletionRequest, max_tokens: int, logprobs: int | None,
            choice: int, structured: StructuredOutputsParams | None) -> SamplingParams:
    """The SamplingParams of one choice; ``ValueError`` naming the field (a 400) when they are inconsistent."""
    seed = body.seed + choice if body.seed is not None and choice else body.seed
    return SamplingParams(
        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
        repetition_penalty=body.repetition_penalty, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, seed=seed, stop=_stop_strings(body.stop),
        stop_token_ids=tuple(body.stop_token_ids or ()), ignore_eos=body.ignore_eos,
        min_tokens=min(body.min_tokens, max_tokens), logprobs=logprobs,
        include_stop_str_in_output=body.include_stop_str_in_output, skip_special_tokens=body.skip_special_tokens,
        structured_outputs=structured, output_kind="delta")


def _structured(body: CompletionRequest | ChatCompletionRequest, tools: ToolPlan | None
                ) -> StructuredOutputsParams | None:
    """The constraint a body asks for: ``response_format``, vLLM's ``structured_outputs`` or its tools'
    schema (one of them; 400 naming the field when several are given or one is malformed)."""
    asked = [name for name, given in (("response_format", body.response_format is not None
                                       and body.response_format.type != "text"),
                                      ("structured_outputs", body.structured_outputs is not None),
                                      ("tools", tools is not None and tools.schema is not None)) if given]
    if len(asked) > 1:
        raise APIError(400, f"{asked[1]}: cannot be combined with {asked[0]}", param=asked[1])
    try:
        if tools is not None and tools.schema is not None:
            return StructuredOutputsParams(json=tools.schema)
        fmt = body.response_format
        if fmt is not None and fmt.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise APIError(400, "response_format.json_schema: required when type is json_schema",
                               param="response_format.json_schema")
            return StructuredOutputsParams(json=fmt.json_schema.schema_)
        if body.structured_outputs is not None:
            given = body.structured_outputs.model_dump(by_alias=True, exclude_none=True)
            return StructuredOutputsParams(**given)
    except ValueError as e:
        raise APIError(400, str(e), param=str(e).split(":", 1)[0].split(" ", 1)[0]) from None
    return None


def plan_request(state: ServerState, body: CompletionRequest | ChatCompletionRequest, request_id: str,
                 principal: Principal) -> Plan:
    """Check ``body`` against the served model and turn it into a plan (400/404/413 before any work)."""
    served = state.check_model(body.model)
    if body.n > state.config.max_n:
        raise APIError(400, f"n: at most {state.config.max_n} choices per request, got {body.n}", param="n")
    if body.min_tokens and body.max_tokens is not None and body.min_tokens > body.max_tokens:
        raise APIError(400, f"min_tokens: {body.min_tokens} exceeds max_tokens {body.max_tokens}", param="min_tokens")
    inputs: list[str | list[Message]]
    tools: ToolPlan | None = None
    if isinstance(body, CompletionRequest):
        kind: Kind = "completion"
        inputs = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if body.echo and body.logprobs is not None:
            raise APIError(400, "echo: prompt logprobs are not supported; drop echo or logprobs", param="echo")
        logprobs, max_tokens = body.logprobs, body.max_tokens
    else:
        kind = "chat"
        choice = body.tool_choice
        tools = plan_tools([t.model_dump() for t in body.tools or []],
                           choice.model_dump() if isinstance(choice, NamedToolChoice) else choice)
        messages = [render_message({"role": m.role, "content": m.text(),
                                    "tool_calls": [c.model_dump() for c in m.tool_calls or []]})
                    for m in body.messages]
        inputs = [with_tools(messages, tools)]
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs set to true", param="top_logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens
    structured = _structured(body, tools)
    prompt_tokens = [_count_prompt(served, prompt) for prompt in inputs]
    choices = []
    for p, prompt in enumerate(inputs):
        # no max_tokens: as much as the context leaves (the engine cuts a larger one to that room too)
        room = max(1, (served.max_model_len or 4096) - prompt_tokens[p])
        limit = min(max_tokens, room) if max_tokens is not None else room
        for j in range(body.n):
            index = p * body.n + j
            rid = request_id if len(inputs) * body.n == 1 else f"{request_id}-{index}"
            try:
                params = _params(body, limit, logprobs, j, structured)
            except ValueError as e:
                raise APIError(400, str(e), param=str(e).split(" ", 1)[0]) from None
            choices.append(ChoicePlan(index, p, prompt, params, rid))
    echo = [p for p in inputs if isinstance(p, str)] if isinstance(body, CompletionRequest) and body.echo else []
    return Plan(kind, f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex}", served,
                choices, prompt_tokens, logprobs, bool(body.stream_options and body.stream_options.include_usage),
                echo, body.priority, body.user, tools if tools is not None and tools.mode != "none" else None)


def _count_prompt(served: ServedModel, prompt: str | list[Message]) -> int:
    """Prompt tokens with the model's tokenizer and template (413 when its context cannot hold it)."""
    if served.engine is None:
        return 0
    try:
        return len(served.engine.processor.prompt_token_ids(prompt))
    except (ValueError, TypeError) as e:
        raise as_api_error(e) from None


# ---------------------------------------------------------------------------------------------- running
@dataclass
class ChoiceResult:
    """What one choice produced."""

    text: str = ""
    finish_reason: str | None = None
    refusal: str | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    logprobs: list[TokenLogprobs] = field(default_factory=list)


def _stream_choice(state: ServerState, plan: Plan, choice: ChoicePlan, principal: Principal
                   ) -> AsyncGenerator[GatewayDelta, None]:
    gateway = state.serving_gateway()
    metadata: dict[str, Any] = {"key_id": principal.key_id, "endpoint": plan.kind, "choice": choice.index}
    if plan.user is not None:
        metadata["end_user"] = plan.user
    return gateway.stream(choice.input, choice.params, user=principal.user, tenant=principal.tenant,
                          metadata=metadata, request_id=choice.request_id, priority=plan.priority,
                          backends=plan.served.backends)


def _take(result: ChoiceResult, delta: GatewayDelta) -> None:
    result.text += delta.text
    if delta.logprobs:
        result.logprobs.extend(delta.logprobs)
    if delta.finished:
        result.finish_reason, result.refusal = delta.finish_reason, delta.refusal
        result.output_tokens, result.prompt_tokens = delta.output_tokens, delta.prompt_tokens


async def _collect(state: ServerState, plan: Plan, choice: ChoicePlan, principal: Principal,
                   on_tokens: Callable[[int], None] | None) -> ChoiceResult:
    result = ChoiceResult()
    async with aclosing(_stream_choice(state, plan, choice, principal)) as deltas:
        async for delta in deltas:
            _take(result, delta)
            if on_tokens is not None and delta.token_ids:
                on_tokens(len(delta.token_ids))
    return result


async def run(state: ServerState, plan: Plan, principal: Principal,
              on_tokens: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run every choice to its end; the OpenAI response body (errors raise, the first one wins).
    ``on_tokens(n)`` hears of every ``n`` new tokens (a job's progress)."""
    if len(plan.choices) == 1:
        results = [await _collect(state, plan, plan.choices[0], principal, on_tokens)]
    else:
        tasks = [asyncio.ensure_future(_collect(state, plan, c, principal, on_tokens)) for c in plan.choices]
        try:
            results = list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
    tok = plan.served.tokenizer
    choices = [_choice_body(plan, c, r, tok) for c, r in zip(plan.choices, results, strict=True)]
    body: dict[str, Any] = {"id": plan.response_id, "object": _object(plan, streamed=False),
                            "created": int(time.time()), "model": plan.model, "choices": choices,
                            "usage": _usage(plan, results)}
    return body


def _object(plan: Plan, streamed: bool) -> str:
    if plan.kind == "completion":
        return "text_completion"
    return "chat.completion.chunk" if streamed else "chat.completion"


def _usage(plan: Plan, results: Sequence[ChoiceResult]) -> dict[str, int]:
    # the engine's own prompt count when it reported one (exact), else the server's count
    by_prompt = dict(enumerate(plan.prompt_tokens))
    for choice, result in zip(plan.choices, results, strict=True):
        if result.prompt_tokens:
            by_prompt[choice.prompt_index] = result.prompt_tokens
    prompt = sum(by_prompt.values())
    completion = sum(r.output_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _choice_body(plan: Plan, choice: ChoicePlan, result: ChoiceResult, tok: Tokenizer | None) -> dict[str, Any]:
    logprobs = _logprobs(plan, result.logprobs, tok, len(_echo(plan, choice))) if plan.logprobs is not None else None
    if plan.kind == "completion":
        text = result.refusal if result.refusal is not None else _echo(plan, choice) + result.text
        return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": result.finish_reason}
    content, calls, finish = _answer_parts(plan, result)
    message = {"role": "assistant", "content": content, "refusal": result.refusal, "tool_calls": calls}
    return {"index": choice.index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def _answer_parts(plan: Plan, result: ChoiceResult) -> tuple[str | None, list[dict[str, Any]] | None, str | None]:
    """A chat answer's content, tool calls and finish reason (``tool_calls`` when the model called tools)."""
    if result.refusal is not None:
        return None, None, result.finish_reason
    if plan.tools is None:
        return result.text, None, result.finish_reason
    content, calls = parse_answer(result.text, plan.tools)
    return content, calls, "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason


def _echo(plan: Plan, choice: ChoicePlan) -> str:
    return plan.echo_prompts[choice.prompt_index] if plan.echo_prompts else ""


def _token_text(tok: Tokenizer | None, token_id: int) -> str:
    return tok.decode([token_id], skip_special_tokens=False) if tok is not None else f"<{token_id}>"


def _logprobs(plan: Plan, entries: Sequence[TokenLogprobs], tok: Tokenizer | None, offset: int = 0
              ) -> dict[str, Any]:
    """OpenAI's logprobs object of ``entries``: chat's ``content`` list or the completions' parallel lists
    (``text_offset`` counts from ``offset``, where the entries' text starts in the choice's text)."""
    if plan.kind == "chat":
        def alt(token_id: int, logprob: float) -> dict[str, Any]:
            text = _token_text(tok, token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
        return {"content": [{**alt(lp.token_id, lp.logprob),
                             "top_logprobs": [alt(t, v) for t, v in lp.top_logprobs.items()]} for lp in entries]}
    tokens = [_token_text(tok, lp.token_id) for lp in entries]
    offsets, at = [], offset
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in entries],
            "top_logprobs": [{_token_text(tok, t): v for t, v in lp.top_logprobs.items()} for lp in entries],
            "text_offset": offsets}


# ---------------------------------------------------------------------------------------------- streaming
async def _merged(state: ServerState, plan: Plan, principal: Principal
                  ) -> AsyncGenerator[tuple[ChoicePlan, GatewayDelta], None]:
    """The deltas of every choice as they come (one task per choice only when there are several)."""
    if len(plan.choices) == 1:
        choice = plan.choices[0]
        async with aclosing(_stream_choice(state, plan, choice, principal)) as deltas:
            async for delta in deltas:
                yield choice, delta
        return
    queue: asyncio.Queue[tuple[ChoicePlan, GatewayDelta | BaseException | None]] = asyncio.Queue()

    async def pump(choice: ChoicePlan) -> None:
        try:
            async with aclosing(_stream_choice(state, plan, choice, principal)) as deltas:
                async for delta in deltas:
                    queue.put_nowait((choice, delta))
            queue.put_nowait((choice, None))
        except Exception as e:  # handed to the consumer: the stream reports it
            queue.put_nowait((choice, e))

    tasks = [asyncio.ensure_future(pump(c)) for c in plan.choices]
    try:
        running = len(tasks)
        while running:
            choice, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield choice, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def open_stream(state: ServerState, plan: Plan, principal: Principal) -> AsyncIterator[str]:
    """Start a streamed request and wait for its first delta, so that a refusal before the first token
    (rate limit, guardrail, no backend) raises here and is answered as a proper HTTP error; then the
    SSE events. A failure after the 200 has gone out is one ``error`` event, then ``[DONE]``."""
    deltas = _merged(state, plan, principal)
    try:
        first = await anext(deltas)
    except BaseException:
        await deltas.aclose()
        raise
    return _events(state, plan, first, deltas)


async def _events(state: ServerState, plan: Plan, first: tuple[ChoicePlan, GatewayDelta],
                  deltas: AsyncGenerator[tuple[ChoicePlan, GatewayDelta], None]) -> AsyncIterator[str]:
    tok = plan.served.tokenizer
    results = {c.index: ChoiceResult() for c in plan.choices}
    head = {"id": plan.response_id, "object": _object(plan, streamed=True), "created": int(time.time()),
            "model": plan.model}
    if plan.kind == "chat":  # the role first, as OpenAI sends it
        yield _sse({**head, "choices": [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None} for c in plan.choices]})
    elif plan.echo_prompts:
        yield _sse({**head, "choices": [{"index": c.index, "text": _echo(plan, c), "logprobs": None,
                                         "finish_reason": None} for c in plan.choices]})
    item: tuple[ChoicePlan, GatewayDelta] | None = first
    try:
        while item is not None:
            choice, delta = item
            result = results[choice.index]
            _take(result, delta)
            if plan.tools is not None:  # a tool answer is JSON until parsed: it goes out whole at the end
                if delta.finished:
                    yield _sse({**head, "choices": [_tool_chunk(plan, choice, result, tok)]})
            elif delta.text or delta.finished:
                offset = len(_echo(plan, choice)) + len(result.text) - len(delta.text)
                yield _sse({**head, "choices": [_chunk_choice(plan, choice, delta, tok, offset)]})
            item = await anext(deltas, None)
    except Exception as e:  # after the 200: the error travels as an event
        err = as_api_error(e)
        yield _sse(error_body(err.status, err.message if err.status != 500 else "internal error", err.param,
                              err.code))
        yield "data: [DONE]\n\n"
        return
    finally:
        await deltas.aclose()
    if plan.include_usage:
        ordered = [results[c.index] for c in plan.choices]
        yield _sse({**head, "choices": [], "usage": _usage(plan, ordered)})
    yield "data: [DONE]\n\n"


def _tool_chunk(plan: Plan, choice: ChoicePlan, result: ChoiceResult, tok: Tokenizer | None) -> dict[str, Any]:
    """The last streamed part of a chat choice that had tools: its tool calls (OpenAI's delta shape,
    each call with its ``index``) or its content, and the finish reason."""
    content, calls, finish = _answer_parts(plan, result)
    delta: dict[str, Any] = {"content": content} if content else {}
    if calls:
        delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
    if result.refusal is not None:
        delta = {"refusal": result.refusal}
    logprobs = _logprobs(plan, result.logprobs, tok) if plan.logprobs is not None else None
    return {"index": choice.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def _chunk_choice(plan: Plan, choice: ChoicePlan, delta: GatewayDelta, tok: Tokenizer | None,
                  offset: int) -> dict[str, Any]:
    """One choice's part of a streamed chunk (its text starts at ``offset`` of the choice's text)."""
    logprobs = _logprobs(plan, delta.logprobs or (), tok, offset) if plan.logprobs is not None else None
    if plan.kind == "completion":
        text = delta.refusal if delta.refusal is not None else delta.text
        return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": delta.finish_reason}
    content: dict[str, Any] = {"content": delta.text} if delta.text else {}
    if delta.refusal is not None:
        content = {"refusal": delta.refusal}
    return {"index": choice.index, "delta": content, "logprobs": logprobs, "finish_reason": delta.finish_reason}
