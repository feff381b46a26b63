"""``ServerConfig``: every setting of ``bastion serve``, validated like ``EngineConfig``.

Values come from flags, a JSON/TOML/YAML file (``--config``; server fields at the top, engine
fields under ``engine``) or ``BASTION_*`` environment variables (``BASTION_PORT=9000``,
``BASTION_API_KEYS=...``); a bad value names its field.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from bastion.audit.config import AuditConfig
from bastion.config import Settings


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_models(value: str | None) -> dict[str, str]:
    """``"a=/m/a.gguf,b=/m/b.gguf"`` as ``{"a": "/m/a.gguf", ...}``; ``ValueError`` naming a bad entry."""
    out: dict[str, str] = {}
    for entry in (value or "").split(","):
        if not entry.strip():
            continue
        name, sep, path = (part.strip() for part in entry.partition("="))
        if not sep or not name or not path:
            raise ValueError(f"models: {entry.strip()!r} is not NAME=PATH")
        if name in out:
            raise ValueError(f"models: {name!r} is named twice")
        out[name] = path
    return out


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
    audit_fsync: Literal["always", "batch", "never"] = Field("always", description="when a record counts as durable")
    audit_signing_key: str | None = Field(None, description="Ed25519 private key (file or env:NAME): signed tree "
                                                            "heads in AUDIT_PATH.heads")
    audit_head_every: int = Field(1000, ge=1, description="sign a tree head every N records")
    audit_head_interval_s: float = Field(60.0, gt=0, description="... or every T seconds")
    audit_master_key: str | None = Field(None, description="32-byte master key (file or env:NAME): personal content "
                                                           "sealed per subject, erasable")
    audit_keystore: str | None = Field(None, description="subject key store (default AUDIT_PATH.keys)")
    audit_retention_days: int | None = Field(None, ge=0, description="content older than this becomes unreadable")
    first_token_timeout_s: float | None = Field(None, gt=0, description="no first token in time: 504")
    request_timeout_s: float | None = Field(None, gt=0, description="a request running longer: 504")
    requests_per_minute: float | None = Field(None, gt=0, description="per-tenant request rate limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="per-tenant token rate limit")
    pipelines: str | None = Field(None, description="','-separated YAML files, one pipeline each, served at "
                                                    "POST /v1/pipelines/{name}/runs (needs bastion[pipeline])")
    models: str | None = Field(None, description="more models served beside the main one, ','-separated "
                                                 "NAME=PATH (GGUF file or HF directory): each its own engine and "
                                                 "KV pool, all sharing the CPU threads; a request picks one by "
                                                 "its `model`")
    guardrails: Literal["none", "default"] = Field("none", description="input/output guardrails of the Gateway: "
                                                                      "none, or bastion's default pipeline")
    log_level: str = Field("info", description="Python log level of the service")
    access_log: bool = Field(True, description="one structured JSON line per HTTP request")

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: str | None) -> str | None:
        parse_models(value)
        return value

    def extra_models(self) -> dict[str, str]:
        """``models`` as NAME -> PATH, in the order given."""
        return parse_models(self.models)

    def audit_config(self) -> AuditConfig | None:
        """The audit trail's settings (None without ``audit_path``); keys are loaded when it is opened."""
        if self.audit_path is None:
            return None
        return AuditConfig(path=self.audit_path, fsync=self.audit_fsync, signing_key=self.audit_signing_key,
                           head_every=self.audit_head_every, head_interval_s=self.audit_head_interval_s,
                           master_key=self.audit_master_key, keystore=self.audit_keystore,
                           retention_days=self.audit_retention_days)

    def check_bind(self, has_keys: bool) -> None:
        """Refuse to serve beyond loopback without keys unless ``insecure_no_auth`` says so."""
        if not has_keys and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(f"host: {self.host!r} is not loopback and no API key is configured; give "
                             "--api-keys-file (or BASTION_API_KEYS), or --insecure-no-auth to serve anyone")
