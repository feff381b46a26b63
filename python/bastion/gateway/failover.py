"""Failover: serve one ``Call`` over the backends in route order, with retries, breakers and the output gate.

Per backend: skip it when the request no longer fits its context or its breaker is open, else
attempt it under the phase timeouts, retrying per ``RetryPolicy``; then fall back to the next one.
Text already sent to the client stays sent: a fallback continues after it, so the client sees one
continuous stream (token ids and logprobs are per delta, so after a fallback they simply come from
the new backend). A blocking output guardrail ends in a refusal delta, never the blocked text.
Before the first token, a ``HedgePolicy`` may race a later backend in route order against a slow
attempt (``hedging.HedgeRace``); the first to answer is the attempt, the other is cancelled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING

from bastion.errors import GuardrailViolation
from bastion.gateway.attempt import Released, Timeouts, run_attempt
from bastion.gateway.backend import Backend, count_tokens
from bastion.gateway.calls import Call
from bastion.gateway.errors import AllBackendsFailed, error_class_of
from bastion.gateway.guarding import OutputGate, decision_records
from bastion.gateway.hedging import HedgePolicy, HedgeRace, Leg
from bastion.gateway.hooks import Hooks
from bastion.gateway.retry import RetryPolicy
from bastion.gateway.routing import Router
from bastion.gateway.telemetry import Telemetry
from bastion.gateway.trace import attempt_outcome
from bastion.gateway.types import GatewayDelta
from bastion.resilience.breaker import CallNotPermitted, CircuitBreaker

if TYPE_CHECKING:
    from bastion.resilience.guardrails import StreamingOutputGuard


class Failover:
    """The Gateway's routing-and-fallback loop over ``backends`` (each guarded by its breaker).

    Shares its collaborators with the ``Gateway`` that builds it (same objects, not copies), so
    the breakers, telemetry and hooks it drives are the ones the Gateway reports and audits.
    """

    def __init__(self, backends: Mapping[str, Backend], breakers: Mapping[str, CircuitBreaker], router: Router, *,
                 retry_policy: RetryPolicy, timeouts: Timeouts,
                 output_guard_factory: Callable[[], StreamingOutputGuard] | None, hooks: Hooks, telemetry: Telemetry, refusal_message: str, rng: random.Random,
                 hedge_policy: HedgePolicy | None = None) -> None:
        self.backends = backends
        self.breakers = breakers
        self.router = router
        self.retry_policy = retry_policy
        self.hedge_policy = hedge_policy or HedgePolicy()
        self.timeouts = timeouts
        self.hooks = hooks
        self.telemetry = telemetry
        self.refusal_message = refusal_message
        self._output_guard_factory = output_guard_factory
        self._rng = rng

    async def serve(self, call: Call) -> AsyncGenerator[GatewayDelta, None]:
        """Stream ``call``'s deltas from the first backend that serves it; the last delta is final.

        Raises ``AllBackendsFailed`` when no backend served it (and none blocked its output).
        """
        order = call.route if call.route is not None else self.router.order()
        for name in order:
            async with aclosing(self._on_backend(call, name, order)) as deltas:
                async for delta in deltas:
                    yield delta
            if call.trace.delivered:
                return
        trace = call.trace
        if any(a.outcome == "blocked" for a in trace.attempts):
            yield self._refusal(call)
            return
        timed_out = all(a.outcome == "timeout" for a in trace.attempts if a.outcome != "open_breaker")
        raise AllBackendsFailed(f"all {len(self.backends)} backend(s) failed: "
                                + "; ".join(f"{a.backend}: {a.outcome}" for a in trace.attempts),
                                trace.attempts, timed_out=timed_out and bool(trace.attempts))

    async def _on_backend(self, call: Call, name: str, order: list[str]) -> AsyncGenerator[GatewayDelta, None]:
        """Try backend ``name`` (with retries); sets ``trace.delivered`` when it served the request."""
        trace, backend, breaker = call.trace, self.backends[name], self.breakers[name]
        retries = 0
        while True:
            started = time.monotonic()
            if call.params.max_tokens - trace.output_tokens <= 0:  # failed right at the end
                yield self._final(call, name, Released("", (), 0), "length")
                return
            if backend.max_context is not None and \
                    count_tokens(backend, call.input_text() + trace.output_text) + 1 > backend.max_context:
                trace.add_attempt(name, "context_overflow", started)
                return
            health = backend.health()
            if health is not None:
                breaker.record_health(health.kv_usage, health.queue_time_s, health.preemptions_per_s)
            try:
                permit = breaker.try_acquire()
            except CallNotPermitted as e:
                trace.add_attempt(name, "open_breaker", started, exc=e, breaker_state=e.state.value)
                return
            state = breaker.state.value
            if trace.attempts and trace.attempts[-1].backend != name:
                self.telemetry.record_fallback(trace.attempts[-1].backend, name)
            request = call.backend_request(f"{trace.request_id}-{len(trace.attempts)}")
            await self.hooks.emit("routed", trace.request_id, backend=name, attempt=len(trace.attempts) + 1,
                                  backend_request_id=request.request_id)
            if trace.output_tokens and trace.fallback_at_token is None:
                trace.fallback_at_token = trace.output_tokens
            sent_before = trace.output_tokens
            gate = OutputGate(self._output_guard_factory)
            leg = Leg(name, permit, state, started, gate, run_attempt(backend, request, gate, self.timeouts))
            # hedge only while the client has nothing yet: two streams are never mixed
            hedges_left = self.hedge_policy.max_hedges - trace.hedges if not trace.output_tokens else 0
            race = HedgeRace(leg, self.hedge_policy, hedges_left,
                             lambda racing: self._open_hedge(call, order, racing, name),
                             lambda lost, how, exc: self._settle_leg(call, lost, how, exc))
            try:
                async with aclosing(race.stream()) as attempt:
                    async for released in attempt:
                        leg = race.leg
                        if released.final is not None:
                            leg.permit.on_success(time.monotonic() - leg.started)
                            trace.add_attempt(leg.name, "ok", leg.started, breaker_state=leg.breaker_state,
                                              tokens_sent=trace.output_tokens + released.num_tokens - sent_before,
                                              hedge=leg.hedge)
                            trace.decisions.extend(decision_records(leg.gate.decisions, "output", leg.name))
                            yield self._final(call, leg.name, released, released.final.finish_reason)
                            return
                        yield await self._delta(call, leg.name, released)
            except GuardrailViolation as e:
                await self._settle_leg(call, race.leg, "failed", e, tokens_sent=trace.output_tokens - sent_before)
                if not self.retry_policy.fallback_on_block:
                    yield self._refusal(call)
                return
            except (asyncio.CancelledError, GeneratorExit):
                if not trace.delivered:  # the client left mid-answer (after the last delta it is no abort)
                    await self._settle_leg(call, race.leg, "aborted", None,
                                           tokens_sent=trace.output_tokens - sent_before)
                raise
            except Exception as e:
                error_class = error_class_of(e)
                await self._settle_leg(call, race.leg, "failed", e, tokens_sent=trace.output_tokens - sent_before)
                if error_class in self.retry_policy.fatal:
                    raise
                retries += 1
                if retries > self.retry_policy.retries_for(error_class):
                    return
                await asyncio.sleep(self.retry_policy.delay(retries, getattr(e, "retry_after", None), self._rng))

    # ------------------------------------------------------------------ hedging
    async def _open_hedge(self, call: Call, order: list[str], racing: set[str], primary: str) -> Leg | None:
        """A hedge attempt on the next backend in route order that fits, has budget and a breaker permit."""
        trace = call.trace
        for name in order[order.index(primary) + 1:]:
            backend, breaker = self.backends[name], self.breakers[name]
            if name in racing or (backend.max_context is not None and
                                  count_tokens(backend, call.input_text()) + 1 > backend.max_context):
                continue
            health = backend.health()
            if health is not None:
                breaker.record_health(health.kv_usage, health.queue_time_s, health.preemptions_per_s)
            if not self.hedge_policy.has_budget(health):  # a loaded engine gets no speculative work
                continue
            try:
                permit = breaker.try_acquire()
            except CallNotPermitted:
                continue
            trace.hedges += 1
            self.telemetry.record_hedge(primary, name)
            request = call.backend_request(f"{trace.request_id}-{len(trace.attempts)}-hedge{trace.hedges}")
            await self.hooks.emit("routed", trace.request_id, backend=name, attempt=len(trace.attempts) + 1,
                                  backend_request_id=request.request_id, hedge=True)
            gate = OutputGate(self._output_guard_factory)
            return Leg(name, permit, breaker.state.value, time.monotonic(), gate,
                       run_attempt(backend, request, gate, self.timeouts), hedge=True)
        return None

    async def _settle_leg(self, call: Call, leg: Leg, how: str, exc: BaseException | None, *,
                          tokens_sent: int = 0) -> None:
        """Report an attempt that ended without serving: to its breaker, the trace and telemetry.

        ``how``: "hedge_lost" or "aborted" (the backend did nothing wrong: the permit is released,
        not counted as a failure) or "failed" with the exception it raised.
        """
        trace = call.trace
        if how != "failed":
            leg.permit.release()
            trace.add_attempt(leg.name, how, leg.started, breaker_state=leg.breaker_state,
                              tokens_sent=tokens_sent, hedge=leg.hedge)
            return
        assert exc is not None
        if isinstance(exc, GuardrailViolation):
            leg.permit.on_success(time.monotonic() - leg.started)  # the backend worked; its text was refused
            trace.add_attempt(leg.name, "blocked", leg.started, exc=exc, breaker_state=leg.breaker_state,
                              tokens_sent=tokens_sent, hedge=leg.hedge)
            trace.decisions.extend(decision_records(leg.gate.decisions or exc.decisions, "output", leg.name))
            self.telemetry.record_guard_block("output")
            await self.hooks.emit("guard_decision", trace.request_id, stage="output", backend=leg.name,
                                  allowed=False)
            return
        leg.permit.on_error(time.monotonic() - leg.started, exc)
        trace.add_attempt(leg.name, attempt_outcome(error_class_of(exc)), leg.started, exc=exc,
                          breaker_state=leg.breaker_state, tokens_sent=tokens_sent, hedge=leg.hedge)

    # ------------------------------------------------------------------ the deltas an attempt yields
    async def _delta(self, call: Call, name: str, released: Released) -> GatewayDelta:
        trace = call.trace
        if trace.take(released.text, released.token_ids, released.num_tokens):
            await self.hooks.emit("first_token", trace.request_id, backend=name, ttft_s=trace.ttft_s)
        return GatewayDelta(released.text, released.token_ids, backend=name, logprobs=released.logprobs)

    def _final(self, call: Call, name: str, released: Released, finish_reason: str | None) -> GatewayDelta:
        """The last delta of a served request."""
        trace = call.trace
        trace.take(released.text, released.token_ids, released.num_tokens)
        trace.complete(name, self.backends[name].model_info, finish_reason, released.final)
        return GatewayDelta(released.text, released.token_ids, backend=name, finished=True,
                            finish_reason=finish_reason, audit_id=trace.audit_id, outcome=trace.outcome,
                            prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens,
                            logprobs=released.logprobs)

    def _refusal(self, call: Call) -> GatewayDelta:
        """The last delta when the output was blocked everywhere: a refusal, never the blocked text."""
        trace = call.trace
        trace.refuse()
        return GatewayDelta("", finished=True, finish_reason="content_filter", refusal=self.refusal_message,
                            audit_id=trace.audit_id, outcome="blocked", prompt_tokens=trace.prompt_tokens,
                            output_tokens=trace.output_tokens)
