"""Access tokens forged, expired or foreign are refused with 401 and `WWW-Authenticate: Bearer`.

Every negative case has a positive twin built the same way with the right ingredient, so that
a test cannot pass because the token was broken for some other reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.core import clock
from app.core.tokens import TokenError, decode_access_token, issue_access_token
from app.models.auth import UserSession
from app.models.user import User
from tests.fixtures.factories import make_user
from tests.fixtures.problems import assert_problem


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(unb64url(token.split(".")[1]))
    return payload


async def live_session(db: AsyncSession) -> tuple[User, UserSession]:
    user = await make_user(db)
    session = UserSession(user_id=user.id, expires_at=clock.now() + timedelta(days=1))
    db.add(session)
    await db.commit()
    return user, session


def user_token(user: User, session: UserSession, **kwargs: Any) -> str:
    token, _ = issue_access_token(
        kind="user", subject=str(user.id), session_id=session.id, **kwargs
    )
    return token


async def get_me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/me", headers={"Authorization": f"Bearer {token}"})


def assert_refused(r: httpx.Response) -> None:
    assert_problem(r, 401, "token_invalid")
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
def rs256(tmp_path: Path) -> Settings:
    """The running settings switched to RS256 with a fresh key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt.key"
    public = tmp_path / "jwt.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return get_settings().model_copy(
        update={
            "jwt_algorithm": "RS256",
            "jwt_private_key_file": private,
            "jwt_public_key_file": public,
        }
    )


class TestMeGetAccessTokens:
    async def test_valid_token(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user, session = await live_session(db)
        r = await get_me(client, user_token(user, session))
        assert r.status_code == 200, r.text
        assert r.json()["id"] == str(user.id)

    @pytest.mark.parametrize(
        "authorization", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer not.a.jwt"]
    )
    async def test_missing_or_garbage(
        self, client: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {} if authorization is None else {"Authorization": authorization}
        r = await client.get("/me", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] in ("unauthorized", "token_invalid")

    async def test_alg_none(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user, session = await live_session(db)
        claims = claims_of(user_token(user, session))
        for alg in ("none", "None", "NONE"):
            header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            forged = f"{header}.{b64url(json.dumps(claims).encode())}."
            assert_refused(await get_me(client, forged))

    async def test_wrong_key(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user, session = await live_session(db)
        claims = claims_of(user_token(user, session))
        secret = get_settings().jwt_secret
        assert secret is not None
        right = jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
        assert (await get_me(client, right)).status_code == 200
        wrong = jwt.encode(claims, "another-secret-of-sufficient-length-0123456789", "HS256")
        assert_refused(await get_me(client, wrong))

    async def test_hs256_signed_with_the_rs256_public_key(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        rs256: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        user, session = await live_session(db)
        # The hand-made signature is right: with the real HS256 secret it is accepted.
        secret = get_settings().jwt_secret
        assert secret is not None
        by_hand = hs256_by_hand(
            {"alg": "HS256", "typ": "JWT"},
            claims_of(user_token(user, session)),
            secret.get_secret_value().encode(),
        )
        assert (await get_me(client, by_hand)).status_code == 200

        monkeypatch.setattr("app.core.tokens._configured", rs256)
        genuine = user_token(user, session)
        assert json.loads(unb64url(genuine.split(".")[0]))["alg"] == "RS256"
        assert (await get_me(client, genuine)).status_code == 200
        # Algorithm confusion: the attacker knows the public key and signs with it as an
        # HMAC secret, hoping the server verifies HS256 with the key it has.
        assert rs256.jwt_public_key_file is not None
        public_pem = rs256.jwt_public_key_file.read_bytes()
        forged = hs256_by_hand({"alg": "HS256", "typ": "JWT"}, claims_of(genuine), public_pem)
        with pytest.raises(TokenError):
            decode_access_token(forged, settings=rs256)
        assert_refused(await get_me(client, forged))

    async def test_expired(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user, session = await live_session(db)
        fresh = user_token(user, session, now=clock.now() - timedelta(seconds=30), ttl_seconds=60)
        assert (await get_me(client, fresh)).status_code == 200
        stale = user_token(user, session, now=clock.now() - timedelta(seconds=61), ttl_seconds=60)
        assert_refused(await get_me(client, stale))

    @pytest.mark.parametrize("field", ["jwt_audience", "jwt_issuer"])
    async def test_foreign_audience_or_issuer(
        self, client: httpx.AsyncClient, db: AsyncSession, field: str
    ) -> None:
        user, session = await live_session(db)
        foreign = get_settings().model_copy(update={field: "someone-else"})
        assert_refused(await get_me(client, user_token(user, session, settings=foreign)))

    @pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss", "sid", "typ"])
    async def test_missing_claim(
        self, client: httpx.AsyncClient, db: AsyncSession, claim: str
    ) -> None:
        user, session = await live_session(db)
        claims = claims_of(user_token(user, session))
        del claims[claim]
        secret = get_settings().jwt_secret
        assert secret is not None
        assert_refused(await get_me(client, jwt.encode(claims, secret.get_secret_value())))

    async def test_tampered_payload(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user, session = await live_session(db)
        admin = await make_user(db, is_admin=True)
        genuine = user_token(user, session)
        header, _, signature = genuine.split(".")
        claims = claims_of(genuine)
        claims["sub"] = str(admin.id)
        forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
        assert_refused(await get_me(client, forged))

    async def test_revoked_or_foreign_session(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user, session = await live_session(db)
        _other, other_session = await live_session(db)
        # A genuine token naming a session of someone else.
        token, _ = issue_access_token(
            kind="user", subject=str(user.id), session_id=other_session.id
        )
        assert_refused(await get_me(client, token))
        token, _ = issue_access_token(kind="user", subject=str(user.id), session_id=uuid.uuid4())
        assert_refused(await get_me(client, token))
        session.revoked_at = clock.now()
        await db.commit()
        assert_refused(await get_me(client, user_token(user, session)))
