"""The OpenAI routes: completions, chat completions, models, tokenize and detokenize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bastion.server import generation
from bastion.server.auth import Principal
from bastion.server.errors import APIError
from bastion.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)
from bastion.server.routes import ERROR_RESPONSES, RequestIdDep, StateDep, require, unless_disconnected
from bastion.server.state import ServerState

router = APIRouter()
GenerateKey = Annotated[Principal, Depends(require("generate"))]
# the schema of one server-sent event (OpenAPI 3.2 describes an event stream event by event): each event's
# data is one JSON chunk, or [DONE] at the end
_SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] after the last one"}}}}}


async def _answer(request: Request, state: ServerState, body: CompletionRequest | ChatCompletionRequest,
                  rid: str, principal: Principal) -> Any:
    plan = generation.plan_request(state, body, rid, principal)
    if body.stream:
        events = await unless_disconnected(request, generation.open_stream(state, plan, principal))
        # Starlette stops the generator when the client goes; closing it aborts the engine requests
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await unless_disconnected(request, generation.run(state, plan, principal)))


@router.post("/v1/completions", response_model=CompletionResponse, responses={**ERROR_RESPONSES,
             200: {"content": _SSE, "description": "the completion, or its SSE chunks when stream is true"}})
async def completions(request: Request, body: CompletionRequest, state: StateDep, rid: RequestIdDep,
                      principal: GenerateKey) -> Any:
    """Complete one prompt (or a list of prompts), streamed over SSE when ``stream`` is true."""
    return await _answer(request, state, body, rid, principal)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={**ERROR_RESPONSES,
             200: {"content": _SSE, "description": "the answer, or its SSE chunks when stream is true"}})
async def chat_completions(request: Request, body: ChatCompletionRequest, state: StateDep, rid: RequestIdDep,
                           principal: GenerateKey) -> Any:
    """Answer a conversation with the model's chat template, streamed over SSE when ``stream`` is true."""
    return await _answer(request, state, body, rid, principal)


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def models(state: StateDep, _: GenerateKey) -> ModelList:
    """The served models, the default one first."""
    state.serving_gateway()
    return ModelList(data=[ModelCard(id=m.id, created=state.created, max_model_len=m.max_model_len)
                           for m in state.models.values()])


def _local(state: ServerState, model: str | None) -> Any:
    state.serving_gateway()
    served = state.check_model(model)
    if served.engine is None:
        raise APIError(404, f"tokenize: model {served.id!r} has no local engine here (its backends are remote)")
    return served.engine


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(body: TokenizeRequest, state: StateDep, _: GenerateKey) -> TokenizeResponse:
    """Token ids of a prompt, or of a conversation rendered with the chat template."""
    engine = _local(state, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "prompt: give exactly one of prompt and messages", param="prompt")
    if body.messages is not None:
        text = engine.tokenizer.apply_chat_template([{"role": m.role, "content": m.text()} for m in body.messages])
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = engine.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=engine.max_model_len)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES)
async def detokenize(body: DetokenizeRequest, state: StateDep, _: GenerateKey) -> DetokenizeResponse:
    """The text of token ids."""
    engine = _local(state, body.model)
    vocab = engine.tokenizer.vocab_size
    bad = [t for t in body.tokens if t >= vocab]
    if bad:
        raise APIError(400, f"tokens: ids outside the vocabulary (size {vocab}): {bad[:5]}", param="tokens")
    return DetokenizeResponse(prompt=engine.tokenizer.decode(body.tokens, skip_special_tokens=False))
