"""``python -m bastion serve [MODEL]``: the OpenAI-compatible service on uvicorn.

Every ``EngineConfig`` and ``ServerConfig`` field is a flag (``--max-num-seqs 64``,
``--drain-timeout 10``); ``--config FILE`` gives them from a file (server fields at the top, engine
fields under ``engine``); ``BASTION_*`` environment variables fill in the rest. Flags win over the
file, the file over the environment. SIGTERM (or Ctrl-C) drains: new work gets 503 and readiness
503, in-flight requests may finish within ``--drain-timeout``, the rest are aborted, then the job
store and the audit trail are closed. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic.fields import FieldInfo

_NONE_WORDS = {"none", "null"}


def _flags(field: str, info: FieldInfo) -> list[str]:
    flags = [f"--{field.replace('_', '-')}"]
    if field.endswith("_s"):  # --drain-timeout for drain_timeout_s
        flags.append(f"--{field[:-2].replace('_', '-')}")
    return flags


def _add_fields(parser: argparse.ArgumentParser, fields: dict[str, FieldInfo], dest_prefix: str,
                skip: set[str]) -> None:
    for name, info in fields.items():
        if name in skip:
            continue
        is_bool = info.annotation is bool
        parser.add_argument(*_flags(name, info), dest=dest_prefix + name, default=None,
                            nargs="?" if is_bool else None, const="true" if is_bool else None,
                            metavar=name.upper(), help=(info.description or "").replace("%", "%%"))
        if is_bool:
            parser.add_argument(f"--no-{name.replace('_', '-')}", dest=dest_prefix + name, action="store_const",
                                const="false", help=argparse.SUPPRESS)


def build_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` command (its flags come from the two config models) to ``sub``."""
    from bastion.config import EngineConfig
    from bastion.server.config import ServerConfig

    p = sub.add_parser("serve", help="run the OpenAI-compatible HTTP service",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None, help="GGUF file or HF directory (default: embedded SmolLM2)")
    p.add_argument("--config", default=None, help="JSON/TOML/YAML file of server fields and an 'engine' table")
    clash = set(EngineConfig.model_fields) & set(ServerConfig.model_fields)
    assert not clash, f"engine and server settings share names: {clash}"
    _add_fields(p.add_argument_group("server"), ServerConfig.model_fields, "server.", set())
    _add_fields(p.add_argument_group("engine"), EngineConfig.model_fields, "engine.", {"model"})
    return p


def _collect(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith(prefix) and value is not None:
            out[key[len(prefix):]] = None if isinstance(value, str) and value.lower() in _NONE_WORDS else value
    return out


def configs(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The validated ``ServerConfig`` and the engine keyword arguments (validated when the engine is built)."""
    from bastion.config import EngineConfig, read_config_file
    from bastion.server.config import ServerConfig

    file: dict[str, Any] = {}
    if args.config:
        file = read_config_file(args.config)
        if not isinstance(file, dict):
            raise ValueError(f"--config {args.config}: expected a mapping of settings")
    engine_file = file.pop("engine", None) or {}
    server = ServerConfig.build(**{**file, **_collect(args, "server.")})
    engine = {**engine_file, **_collect(args, "engine.")}
    if args.model is not None:
        engine["model"] = args.model
    EngineConfig.build(**engine)  # a bad engine flag fails now, before the port is bound
    for name, path in server.extra_models().items():
        if name == "local":
            raise ValueError("models: 'local' names the main model's backend; call the extra model otherwise")
        if not Path(path).exists():
            raise ValueError(f"models: {name}: no GGUF file or model directory at {path}")
        try:
            EngineConfig.build(**{**engine, "model": path})
        except ValueError as e:
            raise ValueError(f"models: {name}: {e}") from None
    return server, engine


def gateway_builder(server: Any, engine_kwargs: dict[str, Any], registry: Any, audit: Any = None) -> Any:
    """A function building the engine and the Gateway the service runs on (called at startup) over
    ``audit``, the AuditLog already opened (so a bad audit key stopped the command before the port was bound)."""

    def build() -> Any:
        from tqdm import tqdm

        from bastion import AsyncLLM, Gateway
        from bastion.config import EngineConfig
        from bastion.engine.compute import ComputeBudget
        from bastion.gateway.attempt import Timeouts
        from bastion.gateway.telemetry import Telemetry
        from bastion.resilience.ratelimit import RateLimit, RateLimiter

        # more models in this process: each its own engine and KV pool, their steps taking turns on the cores
        extras = server.extra_models()
        # the budget takes the validated thread count (flags and BASTION_* variables arrive as text)
        threads = EngineConfig.build(**engine_kwargs).num_threads
        compute = ComputeBudget(threads) if extras else None
        kwargs = {k: v for k, v in engine_kwargs.items() if k != "num_threads"} if extras else engine_kwargs
        engine = AsyncLLM(metrics_registry=registry, compute=compute, **kwargs)
        backends: dict[str, Any] = {"local": engine}
        for name, path in tqdm(extras.items(), desc="loading models", disable=not extras, unit="model"):
            backends[name] = AsyncLLM(**{**kwargs, "model": path}, metrics_registry=registry, compute=compute,
                                      served_name=name)
        limiter = None
        if server.requests_per_minute or server.tokens_per_minute:
            limiter = RateLimiter([RateLimit(server.requests_per_minute, server.tokens_per_minute, scope="tenant")])
        timeouts = Timeouts(first_token_s=server.first_token_timeout_s, attempt_s=server.request_timeout_s)
        guardrails = None
        if server.guardrails == "default":
            from bastion.resilience.guardrails import default_pipeline

            guardrails = default_pipeline()
        return Gateway(backends, audit=audit, rate_limiter=limiter, timeouts=timeouts,
                       guardrails=guardrails, telemetry=Telemetry(registry=registry))

    return build


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code."""
    import uvicorn

    from bastion.audit.sinks import AuditError
    from bastion.server.app import build_app, drain

    try:
        server, engine_kwargs = configs(args)
        import prometheus_client

        registry = prometheus_client.CollectorRegistry()
        audit_config = server.audit_config()
        audit = audit_config.open() if audit_config is not None else None
        app = build_app(gateway_builder(server, engine_kwargs, registry, audit), config=server, registry=registry)
    except (ValueError, OSError, AuditError) as exc:
        print(f"python -m bastion serve: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=server.log_level.upper(), format="%(message)s", stream=sys.stderr)
    state = app.state.bastion

    class DrainingServer(uvicorn.Server):
        """uvicorn, but the first SIGTERM/SIGINT drains before the server stops."""

        draining = False
        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.draining:  # a second signal: stop now
                super().handle_exit(sig, frame)
                self.force_exit = True
                return
            if self.loop is None:  # not serving yet: nothing to drain
                super().handle_exit(sig, frame)
                return
            self.draining = True
            self._captured_signals.append(sig)
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

        async def _drain(self) -> None:
            cancelled = await drain(state, server.drain_timeout_s)
            logging.getLogger("bastion.server").info("drained (%d request(s) aborted at the deadline)", cancelled)
            self.should_exit = True

    config = uvicorn.Config(app, host=server.host, port=server.port, log_level=server.log_level,
                            access_log=False, timeout_graceful_shutdown=5, lifespan="on")
    DrainingServer(config).run()
    return 0

