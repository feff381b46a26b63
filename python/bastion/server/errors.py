"""Every failure as OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.

Each bastion error maps to one status (400 bad input naming the field, 401, 403, 404, 413, 429 with
``Retry-After``, 503, 504); anything unexpected becomes a 500 whose message names only the request
id: the stack trace goes to the log under that id, never to the client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bastion.errors import (
    BastionError,
    EngineDead,
    GuardrailViolation,
    Overloaded,
    PromptTooLong,
    RateLimited,
)
from bastion.gateway.errors import AllBackendsFailed
from bastion.resilience.ratelimit import ReservationTooLarge

log = logging.getLogger("bastion.server")

_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
                   413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                   429: "rate_limit_error", 500: "internal_error", 503: "service_unavailable",
                   504: "timeout_error"}


class APIError(Exception):
    """An error answered to the client as it is: status, message, and the OpenAI ``param``/``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after = retry_after


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": _TYPE_OF_STATUS.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def as_api_error(exc: BaseException) -> APIError:
    """The ``APIError`` the client sees for ``exc`` (a 500 without details for anything unexpected)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, PromptTooLong):
        return APIError(413, str(exc), param="prompt", code="context_length_exceeded")
    if isinstance(exc, RateLimited):
        return APIError(429, str(exc), code="rate_limit_exceeded", retry_after=exc.retry_after)
    if isinstance(exc, ReservationTooLarge):
        return APIError(413, str(exc), param="max_tokens", code="exceeds_rate_limit_capacity")
    if isinstance(exc, Overloaded):
        return APIError(429, f"overloaded: {exc}", code="overloaded", retry_after=1.0)
    if isinstance(exc, GuardrailViolation):
        return APIError(400, "the input was refused by a content policy", code="content_filter")
    if isinstance(exc, EngineDead):
        return APIError(503, "the engine is not running", code="engine_dead")
    if isinstance(exc, AllBackendsFailed):
        if exc.timed_out:
            return APIError(504, "the request ran out of time", code="timeout")
        outcomes = {getattr(a, "outcome", None) for a in exc.attempts}
        if outcomes == {"overloaded"}:  # every backend's queue was full: come back shortly
            return APIError(429, "overloaded: every backend's queue is full; retry later", code="overloaded",
                            retry_after=1.0)
        if outcomes == {"context_overflow"}:
            return APIError(413, "prompt: too long for every backend's context", param="prompt",
                            code="context_length_exceeded")
        return APIError(503, "no backend could serve the request", code="backends_unavailable")
    if isinstance(exc, ValueError):
        message = str(exc)
        param = message.split(":", 1)[0].split(" ", 1)[0] if ":" in message else None
        return APIError(400, message, param=param)
    return APIError(500, "internal error", code="internal_error")


def error_response(err: APIError, request_id: str | None) -> JSONResponse:
    """The JSON response of ``err``, with ``Retry-After`` on 429/503 when known."""
    message = err.message if err.status != 500 else f"internal error (request id {request_id})"
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return JSONResponse(error_body(err.status, message, err.param, err.code), status_code=err.status,
                        headers=headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path: Starlette's 405 names only the methods of
    the first route matching the path, not those of the other routes on the same path. Each method is
    asked of the routes themselves (an included router matches for all of its routes)."""
    allowed = [method for method in _METHODS if any(
        route.matches({**request.scope, "method": method})[0] is Match.FULL for route in request.app.router.routes)]
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the OpenAI shape; log each with its request id."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        log.info("request %s: 400 %s", _request_id(request), message)
        return error_response(APIError(400, message, param=param), _request_id(request))

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        log.info("request %s: %d %s", _request_id(request), exc.status, exc.message)
        return error_response(exc, _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        response = error_response(APIError(exc.status_code, message), _request_id(request))
        if exc.headers:  # e.g. the Allow header of a 405 (RFC 9110 requires it)
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            response.headers["Allow"] = _allowed_methods(request)
        return response

    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        err = as_api_error(exc)
        if err.status >= 500:
            log.error("request %s: %d %s", _request_id(request), err.status, type(exc).__name__, exc_info=exc)
        else:
            log.info("request %s: %d %s", _request_id(request), err.status, err.message)
        return error_response(err, _request_id(request))

    # bastion's own errors and bad values are answered here; anything else reaches the last resort,
    # which answers a bare 500 (Starlette then logs the traceback)
    for cls in (BastionError, ValueError, Exception):
        app.add_exception_handler(cls, _mapped)
