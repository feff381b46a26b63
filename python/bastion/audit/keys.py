"""Key material of the audit trail: the Ed25519 signing key, its public half, and the master key.

A key is named by a *source*: a file path (PEM, or raw bytes, or their hex/base64 text) or
``env:NAME`` (an environment variable holding PEM, hex or base64). An object already in memory
(``Ed25519PrivateKey``, raw ``bytes``) is accepted too. Loading fails with ``AuditKeyError``
naming the source and what is wrong with it, never the key's bytes; the loaded keys' ``repr``
shows only their key id. The key id is the SHA-256 of the raw 32-byte public key (hex): not secret,
printed by the verifier so a reader knows which key a trail was signed with.

The master key (32 bytes) protects the per-subject content keys (``bastion.audit.keystore``);
its id is derived with HKDF, so it names the key without revealing anything about it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.audit.sinks import AuditError

KeySource = Union[str, os.PathLike, bytes]  # noqa: UP007 - a runtime alias (isinstance-free, for hints)


class AuditKeyError(AuditError):
    """A key is missing, unreadable or not the right kind (the message names its source, never its bytes)."""


def _describe(source: KeySource) -> str:
    """How a source is named in messages: its path or variable, never inline key bytes."""
    if isinstance(source, bytes):
        return "key bytes given in memory"
    text = os.fspath(source)
    return f"environment variable {text[4:]}" if text.startswith("env:") else f"file {text}"


def read_source(source: KeySource, what: str) -> bytes:
    """The raw content of a key source (file bytes, variable value, or the bytes themselves)."""
    if isinstance(source, bytes):
        return source
    text = os.fspath(source)
    if text.startswith("env:"):
        value = os.environ.get(text[4:])
        if not value:
            raise AuditKeyError(f"{what}: {_describe(source)} is not set")
        return value.encode()
    path = Path(text)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"{what}: {_describe(source)} does not exist") from None
    except OSError as e:
        raise AuditKeyError(f"{what}: {_describe(source)} cannot be read ({e.strerror})") from None


def _raw32(data: bytes) -> bytes | None:
    """32 key bytes from raw, hex or base64 text; None when ``data`` is none of these."""
    if len(data) == 32:
        return data
    text = data.strip()
    try:
        if len(text) == 64:
            return binascii.unhexlify(text)
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == 32 else None


def key_id_of(public: Ed25519PublicKey) -> str:
    """The key id of an Ed25519 public key: hex SHA-256 of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


class VerifyKey:
    """An Ed25519 public key and its id: all a verifier needs."""

    def __init__(self, public: Ed25519PublicKey) -> None:
        self._public = public
        self.key_id = key_id_of(public)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's signature of ``message``."""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo)."""
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self) -> str:
        return f"VerifyKey(key_id={self.key_id[:16]}...)"


class SigningKey:
    """An Ed25519 private key; its ``repr`` and ``str`` show the key id only."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.verify_key = VerifyKey(private.public_key())
        self.key_id = self.verify_key.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (for ``audit keygen``; keep the file private)."""
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id[:16]}...)"

    __str__ = __repr__


def load_signing_key(source: SigningKey | Ed25519PrivateKey | KeySource) -> SigningKey:
    """Load the Ed25519 private key from ``source`` (PKCS#8 PEM or 32 raw/hex/base64 bytes)."""
    if isinstance(source, SigningKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return SigningKey(source)
    what = "audit signing key"
    data = read_source(source, what)
    if b"-----BEGIN" in data:
        if b"PUBLIC KEY" in data:
            raise AuditKeyError(f"{what}: {_describe(source)} holds a public key; signing needs the private key")
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise AuditKeyError(f"{what}: {_describe(source)} is not a readable unencrypted PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise AuditKeyError(f"{what}: {_describe(source)} is a {type(private).__name__}, not an Ed25519 key")
        return SigningKey(private)
    raw = _raw32(data)
    if raw is None:
        raise AuditKeyError(f"{what}: {_describe(source)} is neither a PEM Ed25519 private key nor 32 raw "
                            "(or hex/base64) bytes")
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw))


def load_verify_key(source: VerifyKey | SigningKey | Ed25519PublicKey | KeySource) -> VerifyKey:
    """Load an Ed25519 public key (SubjectPublicKeyInfo PEM or 32 raw/hex/base64 bytes).

    A private key PEM is accepted too (its public half is used), so the writer's key file works.
    """
    if isinstance(source, VerifyKey):
        return source
    if isinstance(source, SigningKey):
        return source.verify_key
    if isinstance(source, Ed25519PublicKey):
        return VerifyKey(source)
    what = "audit public key"
    data = read_source(source, what)
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY" in data:
            return load_signing_key(source).verify_key
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise AuditKeyError(f"{what}: {_describe(source)} is not a readable PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise AuditKeyError(f"{what}: {_describe(source)} is a {type(public).__name__}, not an Ed25519 key")
        return VerifyKey(public)
    raw = _raw32(data)
    if raw is None:
        raise AuditKeyError(f"{what}: {_describe(source)} is neither a PEM Ed25519 public key nor 32 raw "
                            "(or hex/base64) bytes")
    return VerifyKey(Ed25519PublicKey.from_public_bytes(raw))


def hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 of ``key`` for purpose ``info`` (no salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


class MasterKey:
    """The 32-byte key that wraps the subject keys; ``repr`` shows a derived id only."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise AuditKeyError("audit master key: must be 32 bytes")
        self._raw = raw
        self.key_id = hkdf(raw, b"bastion-audit master key id").hex()

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(secrets.token_bytes(32))

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (wrapping, subject tags), independent of the others."""
        return hkdf(self._raw, b"bastion-audit " + purpose)

    def export_base64(self) -> str:
        """The key as base64 text (for ``audit keygen --master``; keep the file private)."""
        return base64.b64encode(self._raw).decode()

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id[:16]}...)"

    __str__ = __repr__


def load_master_key(source: MasterKey | KeySource) -> MasterKey:
    """Load the master key: 32 raw bytes, or 64 hex digits / base64 text, from a file or ``env:NAME``."""
    if isinstance(source, MasterKey):
        return source
    raw = _raw32(read_source(source, "audit master key"))
    if raw is None:
        raise AuditKeyError(f"audit master key: {_describe(source)} is not 32 raw bytes, 64 hex digits or "
                            "base64 of 32 bytes")
    return MasterKey(raw)


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by the owner only (mode 0600), refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
