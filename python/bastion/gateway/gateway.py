"""``Gateway``: rate limits, guardrails, breakers, A/B routing, fallback and audit around backends.

Order for every request: rate-limit reserve -> input guardrails -> route (A/B weights, skipping
open breakers) -> stream through the output guardrails -> settle the rate limit -> exactly ONE
audit record, whatever the outcome. On an error, timeout, open breaker, ``Overloaded``, context
overflow or blocking output guardrail the Gateway retries per ``RetryPolicy`` and then falls back
to the next backend (that loop is ``failover.Failover``); before the first token, a ``HedgePolicy``
may race a second backend against a slow one (``hedging.HedgeRace``). If text was already sent,
the fallback continues after it, so the client sees one continuous stream. The audit acknowledgement is
awaited after the response completes (never while streaming); if the trail cannot make the
record durable, that wait raises ``AuditError``, so a caller is never told "done" for a request
the trail does not hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from bastion.audit.log import AuditLog
from bastion.audit.record import ContentPolicy
from bastion.errors import GuardrailViolation, RateLimited
from bastion.gateway.attempt import Timeouts
from bastion.gateway.backend import Backend, as_backend, count_tokens, named_backends
from bastion.gateway.calls import Call, build_call
from bastion.gateway.errors import AllBackendsFailed
from bastion.gateway.failover import Failover
from bastion.gateway.guarding import check_input, decision_records, output_guard_factory
from bastion.gateway.hedging import HedgePolicy
from bastion.gateway.hooks import HookFn, Hooks
from bastion.gateway.retry import RetryPolicy
from bastion.gateway.routing import Router
from bastion.gateway.shadow import ShadowRunner
from bastion.gateway.telemetry import RequestSpan, Telemetry
from bastion.gateway.trace import RequestTrace
from bastion.gateway.types import GatewayDelta, GatewayResult, Message
from bastion.resilience.breaker import BreakerConfig, CircuitBreaker, StateTransition
from bastion.resilience.ratelimit import ReservationTooLarge

if TYPE_CHECKING:
    from bastion.gateway.backend import Backends
    from bastion.resilience import RateLimiter, Reservation
    from bastion.resilience.guardrails import GuardrailPipeline
    from bastion.sampling.params import SamplingParams

    # what a caller may pass as a request's sampling parameters: an instance, a dict of its fields, None
    ParamsLike = SamplingParams | Mapping[str, Any] | None

log = logging.getLogger(__name__)
DEFAULT_REFUSAL = "I can't provide that response: it was blocked by a content policy."


class Gateway:
    """Serve requests over one or more backends (AsyncLLM, OpenAIBackend or any ``Backend``).

    ``backends``: a list (named "0", "1", ... in fallback order) or a dict name -> backend; an
    AsyncLLM is wrapped in ``LocalBackend``. ``audit``: an ``AuditLog`` or a path (then owned and
    closed by ``aclose``). ``guardrails``: a ``GuardrailPipeline`` (input + streaming output).
    ``rate_limiter``: a ``RateLimiter``. ``breaker_config``: one breaker per backend, on ``clock``.
    ``weights``: A/B split of the first choice. ``shadow``: a backend (or name) that gets a copy.
    ``hooks``: event name -> callable(s). ``timeouts``: first-token / stall / attempt limits.
    ``hedge_policy``: race a second backend when the first token is late (off by default).
    """

    def __init__(
        self,
        backends: Backends,
        *,
        audit: AuditLog | str | os.PathLike[str] | None = None,
        audit_content: ContentPolicy | None = None,
        guardrails: GuardrailPipeline | None = None,
        rate_limiter: RateLimiter | None = None,
        breaker_config: BreakerConfig | None = None,
        retry_policy: RetryPolicy | None = None,
        hedge_policy: HedgePolicy | None = None,
        timeouts: Timeouts | None = None,
        weights: Mapping[str, float] | None = None,
        shadow: str | Backend | None = None,
        hooks: Hooks | Mapping[str, HookFn | Iterable[HookFn]] | None = None,
        telemetry: Telemetry | None = None,
        refusal_message: str = DEFAULT_REFUSAL,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = named_backends(backends)
        self._rng = rng or random.Random()
        self.router = Router(list(self.backends), weights, self._rng)  # refuses an empty list of backends
        self.retry_policy = retry_policy or RetryPolicy()
        self.hedge_policy = hedge_policy or HedgePolicy()
        self.timeouts = timeouts or Timeouts()
        self._owns_audit = isinstance(audit, (str, os.PathLike))
        self.audit: AuditLog | None = AuditLog(audit) if isinstance(audit, (str, os.PathLike)) else audit
        self.audit_content = audit_content or ContentPolicy()
        self.guardrails = guardrails
        self.rate_limiter = rate_limiter
        self.hooks = hooks if isinstance(hooks, Hooks) else Hooks(hooks)
        self.telemetry = telemetry or Telemetry()
        self.refusal_message = refusal_message
        self.breakers = {name: CircuitBreaker(name, breaker_config, clock=clock) for name in self.backends}
        for name, breaker in self.breakers.items():
            self.telemetry.set_breaker_state(name, breaker.state)
            breaker.add_listener(self._breaker_listener(name))
        self.shadow = ShadowRunner(self._resolve_shadow(shadow)) if shadow is not None else None
        self._failover = Failover(self.backends, self.breakers, self.router, retry_policy=self.retry_policy,
                                  timeouts=self.timeouts, output_guard_factory=output_guard_factory(guardrails),
                                  hooks=self.hooks, telemetry=self.telemetry, refusal_message=refusal_message,
                                  rng=self._rng, hedge_policy=self.hedge_policy)

    def _breaker_listener(self, name: str) -> Callable[[StateTransition], None]:
        """Mirror breaker ``name``'s state changes into the telemetry."""
        return lambda transition: self.telemetry.set_breaker_state(name, transition.to_state)

    def _resolve_shadow(self, shadow: str | Backend) -> Backend:
        if isinstance(shadow, str):
            if shadow not in self.backends:
                raise ValueError(f"shadow names unknown backend {shadow!r}; known: {list(self.backends)}")
            return self.backends[shadow]
        return as_backend(shadow, "shadow")

    # ------------------------------------------------------------------ public API
    async def generate(self, prompt_or_messages: str | list[Message], params: ParamsLike = None, *,
                       user: str | None = None, tenant: str | None = None,
                       metadata: dict[str, Any] | None = None, request_id: str | None = None,
                       priority: int = 0, backends: Sequence[str] | None = None) -> GatewayResult:
        """Serve one request and return the whole answer (see ``stream`` for what is raised and ``backends``)."""
        result = GatewayResult(text="")
        parts: list[str] = []
        async for delta in self._run(prompt_or_messages, params, user, tenant, metadata, request_id,
                                     priority, backends, stream=False):
            parts.append(delta.text)
            result.token_ids.extend(delta.token_ids)
            if delta.logprobs is not None:  # None until some backend gives logprobs
                if result.logprobs is None:
                    result.logprobs = []
                result.logprobs.extend(delta.logprobs)
            if delta.finished:
                result.finish_reason, result.backend = delta.finish_reason, delta.backend
                result.audit_id, result.prompt_tokens = delta.audit_id, delta.prompt_tokens
                result.output_tokens, result.refused = delta.output_tokens, delta.refusal is not None
                result.outcome = delta.outcome or "served"
        result.text = self.refusal_message if result.refused else "".join(parts)
        return result

    def stream(self, prompt_or_messages: str | list[Message], params: ParamsLike = None, *,
               user: str | None = None, tenant: str | None = None, metadata: dict[str, Any] | None = None,
               request_id: str | None = None, priority: int = 0,
               backends: Sequence[str] | None = None) -> AsyncGenerator[GatewayDelta, None]:
        """Serve one request as an async generator of ``GatewayDelta`` (``aclose`` it to stop early).

        ``backends`` (names) replaces the route for this request: only these, in this order (a pipeline
        step pinned to one backend passes one name and falls back by its own policy).

        Raises ``RateLimited``, ``GuardrailViolation`` (input refused), ``AllBackendsFailed``, or
        ``ValueError``/``TypeError`` naming a bad argument. A blocked *output* is not an error: the
        last delta carries ``finish_reason="content_filter"`` and the ``refusal`` message.
        """
        return self._run(prompt_or_messages, params, user, tenant, metadata, request_id, priority, backends,
                         stream=True)

    async def aclose(self) -> None:
        """Cancel shadow requests and close the audit log if the Gateway opened it."""
        if self.shadow is not None:
            await self.shadow.aclose()
        if self._owns_audit and self.audit is not None:
            self.audit.close()

    # ------------------------------------------------------------------ one request
    async def _run(self, prompt_or_messages: str | list[Message], params: ParamsLike, user: str | None,
                   tenant: str | None, metadata: dict[str, Any] | None, request_id: str | None, priority: int,
                   route: Sequence[str] | None, *, stream: bool) -> AsyncGenerator[GatewayDelta, None]:
        try:
            call = build_call(prompt_or_messages, params, user=user, tenant=tenant, metadata=metadata,
                              request_id=request_id, priority=priority, stream=stream, route=route,
                              known_backends=list(self.backends))
        except (TypeError, ValueError) as e:
            trace = RequestTrace(request_id=request_id if isinstance(request_id, str) else "invalid")
            trace.fail("failed", e)
            await self._await_ack(self._finalize(trace, None))
            raise
        trace = call.trace
        span = self.telemetry.start_request(operation=call.operation, model=None, params=call.params, stream=stream)
        reservation, ack, aborted = None, None, False
        try:
            await self.hooks.emit("received", trace.request_id, user=trace.user, tenant=trace.tenant)
            reservation = self._reserve(call)
            self._guard_input(call)
            if self.shadow is not None:
                self.shadow.start(call.backend_request(f"{trace.request_id}-shadow"))
            # a client leaving early closes every layer now
            async with aclosing(self._failover.serve(call)) as deltas:
                async for delta in deltas:
                    yield delta
        except (asyncio.CancelledError, GeneratorExit):
            aborted = not trace.delivered
            if aborted:
                trace.outcome = "aborted"
            raise
        except (RateLimited, ReservationTooLarge) as e:
            trace.fail("rate_limited", e)
            self.telemetry.record_rate_limited()
            raise
        except GuardrailViolation as e:
            trace.fail("blocked", e)
            self.telemetry.record_guard_block("input")
            raise
        except AllBackendsFailed as e:
            trace.fail("timeout" if e.timed_out else "failed", e)
            raise
        except Exception as e:
            trace.fail("failed", e)
            raise
        finally:
            if reservation is not None:
                reservation.settle(trace.prompt_tokens + trace.output_tokens)
            ack = self._finalize(trace, span)
            await self.hooks.emit("finished", trace.request_id, outcome=trace.outcome, audit_id=trace.audit_id)
            if not aborted:
                await self._await_ack(ack)

    def _reserve(self, call: Call) -> Reservation | None:
        first = self.backends[call.route[0] if call.route else self.router.names[0]]
        call.trace.prompt_tokens = count_tokens(first, call.input_text())
        if self.rate_limiter is None:
            return None
        return self.rate_limiter.reserve(call.trace.user, call.trace.tenant,
                                         call.trace.prompt_tokens + call.params.max_tokens)

    def _guard_input(self, call: Call) -> None:
        try:
            call.prompt, call.messages, decisions = check_input(self.guardrails, call.prompt, call.messages)
        except GuardrailViolation as e:
            call.trace.decisions.extend(decision_records(e.decisions, "input"))
            raise
        call.trace.decisions.extend(decision_records(decisions, "input"))

    # ------------------------------------------------------------------ the end of a request
    def _finalize(self, trace: RequestTrace, span: RequestSpan | None) -> Future | None:
        """Metrics, span and the request's one audit record; returns the audit future (or None)."""
        self.telemetry.finish_request(span, trace)
        if self.audit is None:
            return None
        states = {n: b.state.value for n, b in self.breakers.items()}
        try:
            return self.audit.append(trace.to_record(self.audit_content, states))
        except Exception as e:  # surfaces through the ack, like a failed write
            log.exception("audit record for request %s could not be queued", trace.request_id)
            failed: Future = Future()
            failed.set_exception(e)
            return failed

    @staticmethod
    async def _await_ack(ack: Future | None) -> None:
        if ack is not None:
            await asyncio.wrap_future(ack)
