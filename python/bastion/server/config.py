"""``ServerConfig``: every setting of ``bastion serve``, validated like ``EngineConfig``.

Values come from flags, a JSON/TOML/YAML file (``--config``; server fields at the top, engine
fields under ``engine``) or ``BASTION_*`` environment variables (``BASTION_PORT=9000``,
``BASTION_API_KEYS=...``); a bad value names its field.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from bastion.config import Settings


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(Settings):
    """How the HTTP service listens, authenticates, limits, drains and keeps its jobs."""

    model_config = SettingsConfigDict(env_prefix="BASTION_", extra="forbid", validate_assignment=True)

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    served_model_name: str | None = Field(None, description="the model id clients name; default: the model's own name")
    api_keys: str | None = Field(None, description="inline keys, ';'-separated `KEY:tenant:user:scope,scope` entries "
                                                   "(KEY may be `sha256:<hex>`); for tests and containers")
    api_keys_file: str | None = Field(None, description="JSON/TOML/YAML file of keys: [{key_sha256|key, tenant, user, "
                                                        "scopes}]")
    insecure_no_auth: bool = Field(False, description="serve without API keys on a non-loopback address")
    metrics_require_key: bool = Field(False, description="GET /metrics needs a key with the admin scope")
    drain_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM: how long in-flight requests may still run")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body; larger: 413")
    max_n: int = Field(8, ge=1, le=128, description="largest `n` (choices per request)")
    job_store: str | None = Field("bastion-jobs.db", description="SQLite file keeping jobs across restarts; "
                                                                 "None = jobs live in memory only")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key signing job-completion webhooks")
    webhook_timeout_s: float = Field(10.0, gt=0, description="how long one webhook POST may take")
    audit_path: str | None = Field(None, description="audit trail (.jsonl, .db or .sqlite); None = no trail")
    first_token_timeout_s: float | None = Field(None, gt=0, description="no first token in time: 504")
    request_timeout_s: float | None = Field(None, gt=0, description="a request running longer: 504")
    requests_per_minute: float | None = Field(None, gt=0, description="per-tenant request rate limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="per-tenant token rate limit")
    guardrails: Literal["none", "default"] = Field("none", description="input/output guardrails of the Gateway: "
                                                                      "none, or bastion's default pipeline")
    log_level: str = Field("info", description="Python log level of the service")
    access_log: bool = Field(True, description="one structured JSON line per HTTP request")

    def check_bind(self, has_keys: bool) -> None:
        """Refuse to serve beyond loopback without keys unless ``insecure_no_auth`` says so."""
        if not has_keys and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(f"host: {self.host!r} is not loopback and no API key is configured; give "
                             "--api-keys-file (or BASTION_API_KEYS), or --insecure-no-auth to serve anyone")
