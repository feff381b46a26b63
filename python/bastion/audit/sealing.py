"""Sealing a record's personal content under its subject's key (AES-256-GCM), and opening it again.

Sealed content: the ``user``, ``prompt`` and ``output`` fields and the ``end_user`` entry of
``metadata``. They leave the record and travel, as canonical JSON, encrypted in its ``sealed`` field
``{"v", "key_ref", "period", "nonce", "ciphertext"}``; the associated data is the record id and the
key reference, so a ciphertext cannot be moved to another record. The chain and the Merkle tree hash
the sealed record, so destroying the key (``KeyStore.erase_subject`` / ``expire``) leaves every hash
and signature valid while the content can no longer be read by anyone.

The subject is the end user the record is about: ``metadata["end_user"]`` (what the server records
for OpenAI's ``user`` field) when present, otherwise ``user``; a record with neither belongs to the
anonymous subject ``""`` (still a key per day, so retention applies to it too). The day is the UTC
date of the record's ``time``.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.audit.chain import canonical_json
from bastion.audit.keystore import KeyStore

SEALED_FIELDS = ("user", "prompt", "output")
SEALED_METADATA = ("end_user",)
SEAL_VERSION = 1
ContentState = Literal["clear", "readable", "erased"]


def subject_of(body: dict[str, Any]) -> str:
    """The data subject of a record body: its end user, else its user, else ``""`` (anonymous)."""
    metadata = body.get("metadata") or {}
    end_user = metadata.get("end_user") if isinstance(metadata, dict) else None
    return str(end_user or body.get("user") or "")


def period_of(body: dict[str, Any]) -> str:
    """The day (``YYYY-MM-DD``, UTC) whose key seals a record: the date part of its ``time``."""
    return str(body.get("time") or "")[:10] or "0000-00-00"


def _aad(record_id: str, key_ref: str) -> bytes:
    return f"{record_id}|{key_ref}".encode()


class Sealer:
    """Seals record bodies before they are chained; opens sealed ones for reading."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    def seal_many(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sealed copies of ``bodies`` (keys made as needed, one store transaction for the group)."""
        self.store.refresh()
        pairs = [(subject_of(b), period_of(b)) for b in bodies]
        keys = self.store.keys_for(set(pairs))
        return [self.seal(b, *keys[pair], period=pair[1]) for b, pair in zip(bodies, pairs, strict=True)]

    @staticmethod
    def seal(body: dict[str, Any], key_ref: str, key: bytes, *, period: str) -> dict[str, Any]:
        """A copy of ``body`` with its personal content encrypted under ``key`` (reference ``key_ref``)."""
        sealed = dict(body)
        content: dict[str, Any] = {f: sealed.pop(f, None) for f in SEALED_FIELDS}
        metadata = dict(sealed.get("metadata") or {})
        content["metadata"] = {k: metadata.pop(k) for k in SEALED_METADATA if k in metadata}
        sealed.update({f: None for f in SEALED_FIELDS})
        sealed["metadata"] = metadata
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(key).encrypt(nonce, canonical_json(content).encode("utf-8", "surrogatepass"),
                                         _aad(str(body.get("record_id", "")), key_ref))
        sealed["sealed"] = {"v": SEAL_VERSION, "key_ref": key_ref, "period": period,
                            "nonce": base64.b64encode(nonce).decode(),
                            "ciphertext": base64.b64encode(ciphertext).decode()}
        return sealed

    def open(self, body: dict[str, Any]) -> tuple[dict[str, Any], ContentState]:
        """The record with its content restored when its key still exists; and which case it was.

        ``"clear"``: never sealed; ``"readable"``: opened; ``"erased"``: the key was destroyed (the
        content fields stay null and ``sealed`` is kept so the reader sees what was there).
        """
        seal = body.get("sealed")
        if not isinstance(seal, dict):
            return body, "clear"
        key = self.store.key(str(seal.get("key_ref")))
        if key is None:
            return body, "erased"
        try:
            plain = AESGCM(key).decrypt(base64.b64decode(seal["nonce"]), base64.b64decode(seal["ciphertext"]),
                                        _aad(str(body.get("record_id", "")), str(seal["key_ref"])))
        except (InvalidTag, KeyError, ValueError):
            raise ValueError(f"record {body.get('seq')}: sealed content fails its integrity check") from None
        content = json.loads(plain)
        opened = {k: v for k, v in body.items() if k != "sealed"}
        opened.update({f: content.get(f) for f in SEALED_FIELDS})
        opened["metadata"] = dict(opened.get("metadata") or {}) | content.get("metadata", {})
        return opened, "readable"
