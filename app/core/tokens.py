"""Every piece of JWT code lives here: access tokens for members and city clients.

Access tokens are short-lived JWTs (HS256 by default, RS256/ES256 by setting).  Every decode
names its `algorithms` explicitly and verifies `exp`, `iat`, `sub`, `aud` and `iss`, so that
`alg: none`, algorithm confusion (an HS256 token signed with our public key), expired or
foreign tokens are all refused.  Refresh tokens are opaque random strings (see `new_opaque`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from jose import JWTError, jwt

from app.config import Settings

_configured: Settings | None = None


def configure(settings: Settings) -> None:
    """Install the token settings (keys, issuer, audience, lifetimes) for this process; the
    application factory and the command-line entry point call it with their settings."""
    global _configured
    _configured = settings


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    if _configured is None:
        raise RuntimeError("token settings not configured (tokens.configure)")
    return _configured


class TokenError(Exception):
    """The token is not one of ours, or no longer valid."""


@dataclass(frozen=True)
class AccessClaims:
    kind: Literal["user", "client"]
    subject: str
    session_id: uuid.UUID | None
    scopes: frozenset[str]
    expires_at: datetime


def _keys(settings: Settings) -> tuple[str, str]:
    """(signing key, verification key) for the configured algorithm."""
    if settings.jwt_algorithm == "HS256":
        assert settings.jwt_secret is not None
        secret = settings.jwt_secret.get_secret_value()
        return secret, secret
    if settings.jwt_private_key_file is None or settings.jwt_public_key_file is None:
        raise RuntimeError(f"{settings.jwt_algorithm} needs a private and a public key file")
    # Settings objects are not hashable: cache the key files by their paths instead.
    return _read_key_files(settings.jwt_private_key_file, settings.jwt_public_key_file)


@lru_cache
def _read_key_files(private_key_file: Path, public_key_file: Path) -> tuple[str, str]:
    return private_key_file.read_text(), public_key_file.read_text()


def issue_access_token(
    *,
    kind: Literal["user", "client"],
    subject: str,
    session_id: uuid.UUID | None = None,
    scopes: frozenset[str] = frozenset(),
    ttl_seconds: int | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> tuple[str, int]:
    settings = _settings(settings)
    now = now or datetime.now(UTC)
    ttl = ttl_seconds or (
        settings.access_token_ttl_seconds if kind == "user" else settings.client_token_ttl_seconds
    )
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": kind,
    }
    if session_id is not None:
        claims["sid"] = str(session_id)
    if scopes:
        claims["scope"] = " ".join(sorted(scopes))
    signing_key, _ = _keys(settings)
    token = jwt.encode(claims, signing_key, algorithm=settings.jwt_algorithm)
    return token, ttl


def decode_access_token(token: str, settings: Settings | None = None) -> AccessClaims:
    settings = _settings(settings)
    _, verify_key = _keys(settings)
    try:
        claims = jwt.decode(
            token,
            verify_key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "require_aud": True,
                "require_iss": True,
                "verify_exp": True,
                "verify_iat": True,
                "verify_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "leeway": 0,
            },
        )
    except (JWTError, ValueError, TypeError) as exc:
        raise TokenError(str(exc)) from exc
    kind = claims.get("typ")
    subject = claims.get("sub")
    if kind not in ("user", "client") or not isinstance(subject, str):
        raise TokenError("unknown token type")
    session_id: uuid.UUID | None = None
    if kind == "user":
        try:
            session_id = uuid.UUID(str(claims.get("sid")))
        except ValueError as exc:
            raise TokenError("missing session") from exc
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise TokenError("bad scope")
    return AccessClaims(
        kind=kind,
        subject=subject,
        session_id=session_id,
        scopes=frozenset(scope.split()),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def new_opaque(nbytes: int = 32) -> str:
    """A refresh token, bind token or client secret: random, URL-safe."""
    return secrets.token_urlsafe(nbytes)
