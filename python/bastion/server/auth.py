"""API keys: who is calling, for which tenant, with which scopes.

Keys are kept only as SHA-256 digests (a file may hold the digests alone, so the service never
sees a key at rest); a presented key is hashed and compared with every digest through
``hmac.compare_digest``, so neither a near miss nor the position of a match shows in the timing.
Each key maps to a ``Principal``: its tenant and user feed the rate limits, the prefix-cache salt
(no cross-tenant cache hits) and the audit record; its scopes gate the routes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from bastion.config import read_config_file

Scope = Literal["generate", "jobs", "admin"]
SCOPES: tuple[Scope, ...] = ("generate", "jobs", "admin")
_DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class Principal:
    """The caller a key stands for. ``key_id``: the first 12 hex digits of the key's digest (for logs)."""

    tenant: str
    user: str
    scopes: frozenset[Scope]
    key_id: str

    def allows(self, scope: Scope) -> bool:
        """True when the key carries ``scope`` (``admin`` carries every scope)."""
        return scope in self.scopes or "admin" in self.scopes


# The caller when no key is configured (loopback or --insecure-no-auth): one tenant, every scope.
ANONYMOUS = Principal(tenant="default", user="anonymous", scopes=frozenset(SCOPES), key_id="none")


def key_digest(key: str) -> str:
    """The hex SHA-256 digest a key is stored as."""
    return hashlib.sha256(key.encode()).hexdigest()


def _scopes(value: object, where: str) -> frozenset[Scope]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, Mapping):
        raise ValueError(f"{where}.scopes: expected a list of scopes, got {value!r}")
    scopes = {str(s).strip() for s in items if str(s).strip()}
    bad = sorted(scopes - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"{where}.scopes: {bad or 'none given'}; each key needs some of {list(SCOPES)}")
    return frozenset(cast(set[Scope], scopes))


class KeyRing:
    """The configured keys; ``authenticate`` turns a presented key into its ``Principal`` or None."""

    def __init__(self, entries: Iterable[Mapping[str, Any]] = ()) -> None:
        """``entries``: mappings with ``key`` (plain, hashed here) or ``key_sha256``, ``tenant``, ``user``, ``scopes``."""
        self._keys: list[tuple[bytes, Principal]] = []
        for i, entry in enumerate(entries):
            where = f"api_keys[{i}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
            unknown = sorted(set(entry) - {"key", "key_sha256", "tenant", "user", "scopes"})
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown}")
            digest = self._digest_of(entry, where)
            tenant = entry.get("tenant")
            if not isinstance(tenant, str) or not tenant:
                raise ValueError(f"{where}.tenant: a non-empty string is required")
            user = entry.get("user") or tenant
            if not isinstance(user, str):
                raise ValueError(f"{where}.user: expected a string, got {type(user).__name__}")
            principal = Principal(tenant, user, _scopes(entry.get("scopes", ["generate", "jobs"]), where), digest[:12])
            if any(hmac.compare_digest(digest.encode(), d) for d, _ in self._keys):
                raise ValueError(f"{where}: the same key is configured twice")
            self._keys.append((digest.encode(), principal))

    @staticmethod
    def _digest_of(entry: Mapping[str, Any], where: str) -> str:
        key, hashed = entry.get("key"), entry.get("key_sha256")
        if (key is None) == (hashed is None):
            raise ValueError(f"{where}: give exactly one of key and key_sha256")
        if key is not None:
            if not isinstance(key, str) or len(key) < 16:
                raise ValueError(f"{where}.key: keys must be strings of at least 16 characters")
            return key_digest(key)
        digest = str(hashed).lower().removeprefix(_DIGEST_PREFIX)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}.key_sha256: expected 64 hex digits")
        return digest

    @classmethod
    def from_sources(cls, inline: str | None = None, path: str | None = None) -> KeyRing:
        """Keys from ``inline`` (``KEY:tenant:user:scope,scope`` entries split by ';', KEY may be
        ``sha256:<hex>``) and from a JSON/TOML/YAML file holding a list (or ``{"keys": [...]}``)."""
        entries: list[Mapping[str, Any]] = []
        for part in (inline or "").split(";"):
            if not part.strip():
                continue
            fields = part.strip().split(":")
            if fields[0] == "sha256":  # the digest form carries one more colon
                fields = [f"sha256:{fields[1]}", *fields[2:]] if len(fields) > 1 else fields
            if len(fields) < 2:
                raise ValueError("api_keys: each entry is KEY:tenant[:user[:scopes]]")
            key, tenant = fields[0], fields[1]
            entry: dict[str, Any] = {"tenant": tenant, "user": fields[2] if len(fields) > 2 else tenant}
            entry["key_sha256" if key.startswith(_DIGEST_PREFIX) else "key"] = key
            if len(fields) > 3:
                entry["scopes"] = fields[3]
            entries.append(entry)
        if path:
            data: Any = read_config_file(path)
            listed = data.get("keys") if isinstance(data, Mapping) else data
            if not isinstance(listed, list):
                raise ValueError(f"api_keys_file {path}: expected a list of keys (or a 'keys' list)")
            entries.extend(listed)
        return cls(entries)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of ``presented``, or None. Every digest is compared, whatever matches."""
        digest = key_digest(presented).encode()
        found: Principal | None = None
        for stored, principal in self._keys:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found


def presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return api_key_header or None


def authorize(keys: KeyRing, authorization: str | None, api_key_header: str | None, scope: Scope) -> Principal:
    """The caller's principal, checked for ``scope``: ``AuthError`` 401 (no or unknown key) or 403 (scope)."""
    if len(keys) == 0:
        return ANONYMOUS
    key = presented_key(authorization, api_key_header)
    if key is None:
        raise AuthError(401, "no API key: send 'Authorization: Bearer <key>'")
    principal = keys.authenticate(key)
    if principal is None:
        raise AuthError(401, "invalid API key")
    if not principal.allows(scope):
        raise AuthError(403, f"this key lacks the {scope!r} scope")
    return principal


class AuthError(Exception):
    """Authentication (401) or authorization (403) failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
