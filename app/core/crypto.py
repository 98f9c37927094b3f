"""Field encryption (AES-256-GCM) and blind indexes (HMAC-SHA256) for personal data."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import Settings, decode_key

_NONCE = 12
_VERSION = b"\x01"


@dataclass(frozen=True)
class _Keys:
    aead: AESGCM
    index_key: bytes
    derived: dict[bytes, bytes] = field(default_factory=dict)


_keys: _Keys | None = None


def configure(settings: Settings) -> None:
    """Install the keys of `settings` for this process.  The application factory and the
    command-line entry point call it with the settings they were given; nothing reads the
    environment behind their back."""
    global _keys
    _keys = _Keys(
        aead=AESGCM(decode_key(settings.field_encryption_key)),
        index_key=decode_key(settings.blind_index_key),
    )


def _installed() -> _Keys:
    if _keys is None:
        raise RuntimeError("field encryption keys not configured (crypto.configure)")
    return _keys


def _aead() -> AESGCM:
    return _installed().aead


def _index_key() -> bytes:
    return _installed().index_key


def derive_key(purpose: bytes) -> bytes:
    """A 32-byte key for one `purpose`, derived (HKDF-SHA256) from the blind-index key, so
    that a feature needing its own secret (e.g. attendance codes) has one without a setting."""
    keys = _installed()
    key = keys.derived.get(purpose)
    if key is None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
        key = keys.derived[purpose] = hkdf.derive(keys.index_key)
    return key


def encrypt(plaintext: str, *, context: str) -> bytes:
    """Encrypt; `context` (e.g. "users.id_number") is bound as associated data."""
    nonce = os.urandom(_NONCE)
    return _VERSION + nonce + _aead().encrypt(nonce, plaintext.encode(), context.encode())


def decrypt(blob: bytes, *, context: str) -> str:
    if blob[:1] != _VERSION:
        raise ValueError("unknown ciphertext version")
    nonce, body = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
    return _aead().decrypt(nonce, body, context.encode()).decode()


def blind_index(value: str, *, context: str) -> str:
    """A keyed hash for equality look-ups and uniqueness without storing the value."""
    return hmac.new(_index_key(), f"{context}:{value}".encode(), hashlib.sha256).hexdigest()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def mask_id_number(value: str) -> str:
    """3302**********1234: region prefix and last four only."""
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str) -> str:
    """138****5678."""
    return value[:3] + "****" + value[-4:] if len(value) >= 7 else "****"
