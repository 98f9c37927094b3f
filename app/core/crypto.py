"""Field encryption (AES-256-GCM) and blind indexes (HMAC-SHA256) for personal data."""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import decode_key, get_settings

_NONCE = 12
_VERSION = b"\x01"


@lru_cache
def _aead() -> AESGCM:
    return AESGCM(decode_key(get_settings().field_encryption_key))


@lru_cache
def _index_key() -> bytes:
    return decode_key(get_settings().blind_index_key)


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
