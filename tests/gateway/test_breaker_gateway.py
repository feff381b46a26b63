"""Circuit breakers inside the Gateway: opening on failures or bad engine health, and recovering."""

from __future__ import annotations

from bastion.gateway import BackendHealth, BackendUnavailable, Gateway, RetryPolicy
from bastion.resilience.breaker import BreakerConfig, BreakerState, HealthPolicy
from bastion.sampling import SamplingParams

from .fault_backends import SCRIPT, ScriptedBackend
from .gateway_helpers import QUICK_BREAKER, read_records

PARAMS = SamplingParams(max_tokens=8)


async def test_breaker_opens_skips_backend_and_recovers(audit_log, audit_path, clock):
    primary = ScriptedBackend("a", raise_before=BackendUnavailable("down"))
    backup = ScriptedBackend("b")
    gw = Gateway({"a": primary, "b": backup}, audit=audit_log, breaker_config=QUICK_BREAKER, clock=clock,
                 retry_policy=RetryPolicy(retries={}))
    for _ in range(2):
        assert (await gw.generate("hi", PARAMS)).backend == "b"
    assert gw.breakers["a"].state is BreakerState.OPEN
    calls_while_open = len(primary.requests)

    result = await gw.generate("hi", PARAMS)  # open breaker: "a" is not even called
    assert result.backend == "b" and len(primary.requests) == calls_while_open
    rec = read_records(audit_path)[-1]
    assert rec["attempts"][0]["outcome"] == "open_breaker" and rec["breaker_states"]["a"] == "open"
    assert rec["outcome"] == "fallback"

    primary.heal()
    clock.advance(QUICK_BREAKER.wait_duration_in_open_state + 1)  # half-open: one probe allowed
    result = await gw.generate("hi", PARAMS)
    assert result.backend == "a" and result.outcome == "served"
    assert gw.breakers["a"].state is BreakerState.CLOSED
    assert read_records(audit_path)[-1]["breaker_states"]["a"] == "closed"


async def test_bad_engine_health_sheds_load_to_fallback(audit_log, clock):
    sick = ScriptedBackend("local", health_report=BackendHealth(kv_usage=0.995, queue_time_s=0.0,
                                                                 preemptions_per_s=0.0))
    config = BreakerConfig(sliding_window_size=4, minimum_number_of_calls=2, slow_call_rate_threshold=50.0,
                           wait_duration_in_open_state=10.0, health_policy=HealthPolicy(max_kv_usage=0.98))
    gw = Gateway({"local": sick, "remote": ScriptedBackend("remote")}, audit=audit_log,
                 breaker_config=config, clock=clock)
    backends = [(await gw.generate("hi", PARAMS)).backend for _ in range(4)]
    assert gw.breakers["local"].state is BreakerState.OPEN
    assert backends[0] == "local" and backends[-1] == "remote"


async def test_breaker_state_reaches_prometheus(audit_log, clock):
    gw = Gateway({"a": ScriptedBackend("a", raise_before=BackendUnavailable("down")), "b": ScriptedBackend("b")},
                 audit=audit_log, breaker_config=QUICK_BREAKER, clock=clock, retry_policy=RetryPolicy(retries={}))
    registry = gw.telemetry.registry
    assert registry.get_sample_value("bastion_gateway_breaker_state", {"backend": "a"}) == 0
    for _ in range(2):
        assert (await gw.generate("hi", PARAMS)).text == SCRIPT.split(" ")[0] + "".join(
            " " + w for w in SCRIPT.split(" ")[1:8])
    assert registry.get_sample_value("bastion_gateway_breaker_state", {"backend": "a"}) == 2
    assert registry.get_sample_value("bastion_gateway_fallbacks_total", {"from_backend": "a", "to_backend": "b"}) == 2
