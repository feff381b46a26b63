"""``OpenAIBackend``: any OpenAI-compatible server (vLLM, llama.cpp server, OpenAI) as a Backend.

Streams ``/chat/completions`` (for messages) or ``/completions`` (for a raw prompt) over SSE and maps
failures to the Gateway's error classes: 429 -> ``UpstreamRateLimited`` (with Retry-After), 5xx ->
``UpstreamServerError``, 400 about context length -> ``ContextWindowExceeded``, other 4xx ->
``BadRequest``/``UpstreamAuthError``, timeouts -> ``BackendTimeout``, connection problems or a stream
cut before ``[DONE]`` -> ``BackendUnavailable``, bad JSON -> ``MalformedResponse``.

Mid-stream continuation: completions get ``prompt + continuation``; chat requests get the partial
answer as a final assistant message with ``continue_final_message=true`` and
``add_generation_prompt=false`` (vLLM's extension for continuing an assistant turn).

Structured outputs go upstream in OpenAI's shape where it has one: a JSON schema as
``response_format={"type": "json_schema", "json_schema": {"name": "response", "schema": ..., "strict": true}}``
(OpenAI itself then wants ``additionalProperties: false`` on every object), ``json_object`` as
``response_format={"type": "json_object"}``; a regex, a choice or a grammar as vLLM's
``structured_outputs`` field (``{"regex": ...}``, ``{"choice": [...]}``, ``{"grammar": ...}``), which
servers other than vLLM ignore or refuse.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bastion.audit.record import ModelIdentity
from bastion.gateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextWindowExceeded,
    MalformedResponse,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from bastion.gateway.types import BackendChunk, BackendHealth, BackendRequest
from bastion.sampling.structured_params import StructuredOutputsParams

# SamplingParams fields forwarded as-is under the same OpenAI name (others have no OpenAI equivalent).
_FORWARDED = ("max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield each server-sent event's data (multi-line data joined with newlines), per the SSE format.

    Comment lines (``:...``) and other fields (``event:``, ``id:``, ``retry:``) are skipped; an
    event ends at a blank line, and a final event without its blank line is still delivered.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def structured_output_fields(params: StructuredOutputsParams | None) -> dict[str, Any]:
    """The request-body fields that carry a structured-output constraint upstream ({} for none)."""
    if params is None:
        return {}
    if params.kind == "json":
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "response", "schema": params.schema, "strict": True}}}
    if params.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    value = list(params.choice or ()) if params.kind == "choice" else getattr(params, params.kind)
    return {"structured_outputs": {params.kind: value}}


def _status_error(status: int, body: str, response: httpx.Response) -> BackendError:
    """The BackendError for an HTTP error status with its (already read) body."""
    detail = f"HTTP {status}: {body[:300]}"
    if status == 429:
        return UpstreamRateLimited(detail, retry_after=_retry_after(response))
    if status >= 500:
        return UpstreamServerError(detail, retry_after=_retry_after(response))
    if status in (401, 403):
        return UpstreamAuthError(detail)
    lowered = body.lower()
    if status in (400, 413) and ("context" in lowered or "too long" in lowered or "maximum" in lowered):
        return ContextWindowExceeded(detail)
    return BadRequest(detail)


class OpenAIBackend:
    """An OpenAI-compatible HTTP server as a streaming ``Backend``.

    No logprobs: the OpenAI API reports them per token *string* (``logprobs.content[].token``), never
    per token id, and ``TokenLogprobs`` is keyed by token id, so they cannot be mapped. ``params.logprobs``
    is therefore not forwarded upstream and every chunk has ``logprobs=None`` (as it has no token ids).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_context: int | None = None,
        version: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty model name")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_info = ModelIdentity(name=model, version=version)
        self.max_context = max_context
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )
        self._active: dict[str, httpx.Response] = {}

    def health(self) -> BackendHealth | None:
        """Remote servers report no engine health here (their breaker learns from errors)."""
        return None

    def _body(self, request: BackendRequest) -> tuple[str, dict[str, Any]]:
        params = request.params
        body: dict[str, Any] = {"model": self.model, "stream": True, "stream_options": {"include_usage": True}}
        body.update({k: getattr(params, k) for k in _FORWARDED if getattr(params, k, None) is not None})
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(structured_output_fields(params.structured_outputs))
        if request.messages is None:
            body["prompt"] = (request.prompt or "") + request.continuation
            return "/completions", body
        messages = list(request.messages)
        if request.continuation:
            messages.append({"role": "assistant", "content": request.continuation})
            body.update(continue_final_message=True, add_generation_prompt=False)
        body["messages"] = messages
        return "/chat/completions", body

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendChunk]:
        """POST the request with ``stream=true`` and yield its SSE chunks."""
        path, body = self._body(request)
        try:
            async with self._client.stream("POST", self.base_url + path, json=body) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise _status_error(response.status_code, text, response)
                self._active[request.request_id] = response
                async for chunk in self._parse(iter_sse_data(response.aiter_lines()), chat=path != "/completions"):
                    yield chunk
        except httpx.TimeoutException as e:
            raise BackendTimeout(f"{self.base_url}: timed out ({type(e).__name__})") from e
        except (httpx.TransportError, httpx.StreamError) as e:
            raise BackendUnavailable(f"{self.base_url}: {type(e).__name__}: {e}") from e
        finally:
            self._active.pop(request.request_id, None)

    async def _parse(self, events: AsyncIterator[str], *, chat: bool) -> AsyncIterator[BackendChunk]:
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        counted = 0
        async for data in events:
            if data.strip() == "[DONE]":
                extra = max(0, int(usage.get("completion_tokens", counted)) - counted)
                yield BackendChunk("", num_tokens=extra, finish_reason=finish_reason or "stop",
                                   prompt_tokens=usage.get("prompt_tokens"))
                return
            try:
                event = json.loads(data)
                if "error" in event:
                    raise UpstreamServerError(f"error event in stream: {str(event['error'])[:300]}")
                usage = event.get("usage") or usage
                choices = event.get("choices") or []
                choice = choices[0] if choices else {}
                text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                finish_reason = choice.get("finish_reason") or finish_reason
            except (ValueError, AttributeError, TypeError, IndexError) as e:
                raise MalformedResponse(f"malformed stream event {data[:200]!r}: {e}") from e
            if text:
                counted += 1
                yield BackendChunk(str(text), num_tokens=1)
        raise BackendUnavailable("stream ended before [DONE]")

    async def abort(self, request_id: str) -> None:
        """Close the HTTP stream of ``request_id``; the server sees the disconnect and stops."""
        response = self._active.pop(request_id, None)
        if response is not None:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
