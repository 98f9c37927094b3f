"""POST /auth/token: the three grants, RFC 6749 errors, throttling."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import quote_plus

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.crypto import sha256_hex
from app.core.tokens import decode_access_token
from app.models.auth import RefreshToken, UserSession
from app.models.kit import SignInFailure
from tests.fixtures.factories import PASSWORD, make_client, make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import (
    assert_oauth_error,
    bearer,
    count_rows,
    password_login,
    refresh,
)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class TestAuthTokenPasswordGrant:
    async def test_signs_in(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        app: FastAPI,
    ) -> None:
        user = await make_user(db)
        r = await password_login(client, user.phone, **{"User-Agent": "QuyuApp/1.0 (iPhone)"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == app.state.settings.access_token_ttl_seconds
        claims = decode_access_token(body["access_token"])
        assert claims.kind == "user"
        assert claims.subject == str(user.id)
        async with sessionmaker() as s:
            session = (await s.execute(select(UserSession))).scalar_one()
            stored = (await s.execute(select(RefreshToken))).scalar_one()
        assert claims.session_id == session.id
        assert session.user_id == user.id
        assert session.device == "QuyuApp/1.0 (iPhone)"
        assert session.auth_method == "password"
        ttl = timedelta(seconds=app.state.settings.refresh_token_ttl_seconds)
        assert abs(session.expires_at - (clock.now() + ttl)) < timedelta(minutes=1)
        # Stored hashed only.
        assert stored.token_hash == sha256_hex(body["refresh_token"])
        assert stored.token_hash != body["refresh_token"]
        assert stored.session_id == session.id
        assert (await client.get("/me", headers=bearer(body["access_token"]))).status_code == 200

    async def test_phone_in_any_usual_format(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db, phone="13812345678")
        r = await password_login(client, "+86 138-1234-5678")
        assert r.status_code == 200, r.text
        assert decode_access_token(r.json()["access_token"]).subject == str(user.id)

    async def test_long_user_agent_is_truncated(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        r = await password_login(client, user.phone, **{"User-Agent": "A" * 500})
        assert r.status_code == 200
        async with sessionmaker() as s:
            session = (await s.execute(select(UserSession))).scalar_one()
        assert session.device == "A" * 120

    @pytest.mark.parametrize("case", ["wrong_password", "unknown_phone", "not_a_phone", "inactive"])
    async def test_wrong_credentials(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        case: str,
    ) -> None:
        user = await make_user(db, is_active=case != "inactive")
        username, password = {
            "wrong_password": (user.phone, "not-the-password"),
            "unknown_phone": ("13700000000", PASSWORD),
            "not_a_phone": ("admin", PASSWORD),
            "inactive": (user.phone, PASSWORD),
        }[case]
        r = await password_login(client, username, password)
        body = assert_oauth_error(r, 400, "invalid_grant")
        assert body["detail"] == "手机号或密码错误"
        assert body["error_description"] == "The phone number or password is wrong"
        assert await count_rows(sessionmaker, UserSession) == 0

    async def test_english_on_request(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        r = await password_login(client, user.phone, "nope-nope", **{"Accept-Language": "en"})
        body = assert_oauth_error(r, 400, "invalid_grant")
        assert body["detail"] == "The phone number or password is wrong"
        assert body["title"] == "The grant is invalid, expired or revoked"

    async def test_flood_per_phone_is_throttled(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_pair", 3)
        monkeypatch.setattr(app.state.settings, "login_lock_base_seconds", 3600)
        monkeypatch.setattr(app.state.settings, "login_lock_max_seconds", 3600)
        user = await make_user(db)
        other = await make_user(db)
        for _ in range(3):
            assert (await password_login(client, user.phone, "wrong-password")).status_code == 400
        # Even the right password is refused now: a locked phone's password is not looked at.
        r = await password_login(client, user.phone, **{"Accept-Language": "en"})
        body = assert_problem(r, 429, "too_many_requests")
        assert body["title"] == "Too many requests, try again later"
        retry_after = int(r.headers["retry-after"])
        assert 3590 <= retry_after <= 3600
        # Another phone from the same address is not affected.
        assert (await password_login(client, other.phone)).status_code == 200
        # Keys hold a keyed hash, never the phone number.
        async with sessionmaker() as s:
            keys = list((await s.execute(select(SignInFailure.key))).scalars())
        assert keys
        assert not any(user.phone in key or other.phone in key for key in keys)

    async def test_flood_per_address_is_throttled(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_address", 4)
        monkeypatch.setattr(app.state.settings, "login_lock_base_seconds", 3600)
        monkeypatch.setattr(app.state.settings, "login_lock_max_seconds", 3600)
        user = await make_user(db)
        for i in range(4):
            assert (await password_login(client, f"1370000000{i}")).status_code == 400
        r = await password_login(client, user.phone)
        assert_problem(r, 429, "too_many_requests")
        assert int(r.headers["retry-after"]) >= 1

    async def test_forwarded_for_only_when_trusted(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Locks of an hour: the answers do not depend on how long the test takes.
        monkeypatch.setattr(app.state.settings, "login_failures_per_address", 2)
        monkeypatch.setattr(app.state.settings, "login_lock_base_seconds", 3600)
        monkeypatch.setattr(app.state.settings, "login_lock_max_seconds", 3600)
        user = await make_user(db)
        # Untrusted: a client rotating X-Forwarded-For is still one address.
        for i in range(2):
            r = await password_login(client, "13700000000", **{"X-Forwarded-For": f"10.0.0.{i}"})
            assert r.status_code == 400
        r = await password_login(client, user.phone, **{"X-Forwarded-For": "10.0.0.9"})
        assert r.status_code == 429
        # Trusted (behind our proxy): the address the proxy appended counts.
        monkeypatch.setattr(app.state.settings, "trust_forwarded_for", True)
        r = await password_login(client, user.phone, **{"X-Forwarded-For": "1.2.3.4, 10.0.0.9"})
        assert r.status_code == 200, r.text


class TestAuthTokenRefreshGrant:
    async def _login(self, client: httpx.AsyncClient, db: AsyncSession) -> dict[str, str]:
        user = await make_user(db)
        r = await password_login(client, user.phone)
        assert r.status_code == 200
        tokens: dict[str, str] = r.json()
        return tokens

    async def test_rotates(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        first = await self._login(client, db)
        r = await refresh(client, first["refresh_token"])
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["token_type"] == "bearer"
        assert "scope" not in second
        old = decode_access_token(first["access_token"])
        new = decode_access_token(second["access_token"])
        assert (new.subject, new.session_id) == (old.subject, old.session_id)
        async with sessionmaker() as s:
            tokens = (await s.execute(select(RefreshToken))).scalars().all()
            session = (await s.execute(select(UserSession))).scalar_one()
        assert len(tokens) == 2
        spent = {t.token_hash: t.used_at for t in tokens}
        assert spent[sha256_hex(first["refresh_token"])] is not None
        assert spent[sha256_hex(second["refresh_token"])] is None
        assert session.last_used_at > session.created_at
        # The new refresh token rotates again; the session is still alive.
        third = await refresh(client, second["refresh_token"])
        assert third.status_code == 200
        me = await client.get("/me", headers=bearer(third.json()["access_token"]))
        assert me.status_code == 200

    async def test_reuse_revokes_the_whole_session(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        first = await self._login(client, db)
        second = (await refresh(client, first["refresh_token"])).json()
        # The first refresh token comes back (stolen, or replayed): 401 and the family dies.
        r = await refresh(client, first["refresh_token"])
        body = assert_oauth_error(r, 401, "invalid_grant")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "already used" in body["error_description"]
        async with sessionmaker() as s:
            session = (await s.execute(select(UserSession))).scalar_one()
        assert session.revoked_at is not None
        assert session.revoked_reason == "refresh_reuse"
        # The newest refresh token of the family is dead too, and so are its access tokens.
        assert_oauth_error(await refresh(client, second["refresh_token"]), 401, "invalid_grant")
        for access in (first["access_token"], second["access_token"]):
            me = await client.get("/me", headers=bearer(access))
            assert me.status_code == 401
            assert me.headers["www-authenticate"].startswith("Bearer")

    async def test_reuse_does_not_touch_other_sessions(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db)
        phone = (await password_login(client, user.phone)).json()
        tablet = (await password_login(client, user.phone)).json()
        await refresh(client, phone["refresh_token"])
        assert (await refresh(client, phone["refresh_token"])).status_code == 401
        assert (await refresh(client, tablet["refresh_token"])).status_code == 200

    @pytest.mark.parametrize("state", ["expired", "revoked", "user_inactive"])
    async def test_dead_session(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        state: str,
    ) -> None:
        tokens = await self._login(client, db)
        async with sessionmaker() as s, s.begin():
            if state == "expired":
                await s.execute(
                    update(UserSession).values(expires_at=clock.now() - timedelta(seconds=1))
                )
            elif state == "revoked":
                await s.execute(
                    update(UserSession).values(revoked_at=clock.now(), revoked_reason="logout")
                )
            else:
                from app.models.user import User

                await s.execute(update(User).values(is_active=False))
        r = await refresh(client, tokens["refresh_token"])
        assert_oauth_error(r, 401, "invalid_grant")
        async with sessionmaker() as s:
            stored = (await s.execute(select(RefreshToken))).scalar_one()
        assert stored.used_at is None  # nothing was spent

    async def test_unknown_token(self, client: httpx.AsyncClient) -> None:
        r = await refresh(client, "not-a-token-we-issued")
        assert_oauth_error(r, 401, "invalid_grant")

    async def test_missing_token(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/auth/token", data={"grant_type": "refresh_token"})
        body = assert_oauth_error(r, 400, "invalid_request")
        assert "refresh_token" in body["error_description"]


class TestAuthTokenClientCredentials:
    async def test_form_credentials_get_all_scopes(
        self, client: httpx.AsyncClient, db: AsyncSession, app: FastAPI
    ) -> None:
        api_client, _ = await make_client(db, scopes="stats:read orgs:read")
        r = await client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": api_client.client_id,
                "client_secret": PASSWORD,
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["scope"] == "orgs:read stats:read"
        assert body["expires_in"] == app.state.settings.client_token_ttl_seconds
        claims = decode_access_token(body["access_token"])
        assert claims.kind == "client"
        assert claims.subject == api_client.client_id
        assert claims.scopes == {"orgs:read", "stats:read"}
        assert claims.session_id is None
        # A client is not a member.
        r = await client.get("/me", headers=bearer(body["access_token"]))
        assert_problem(r, 403, "members_only")

    async def test_basic_credentials_and_a_narrower_scope(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        api_client, _ = await make_client(db, scopes="stats:read orgs:read")
        r = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": "stats:read"},
            headers=basic(api_client.client_id, PASSWORD),
        )
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "stats:read"
        assert decode_access_token(r.json()["access_token"]).scopes == {"stats:read"}

    async def test_scope_beyond_the_clients(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        api_client, _ = await make_client(db, scopes="orgs:read")
        r = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "scope": "orgs:read roster:write"},
            headers=basic(api_client.client_id, PASSWORD),
        )
        assert_oauth_error(r, 400, "invalid_scope")

    async def test_wrong_secret_with_basic(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        api_client, _ = await make_client(db)
        r = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers=basic(api_client.client_id, "wrong-secret"),
        )
        assert_oauth_error(r, 401, "invalid_client")
        assert r.headers["www-authenticate"].startswith("Basic")

    @pytest.mark.parametrize("case", ["unknown", "inactive", "wrong_secret", "no_secret"])
    async def test_bad_form_credentials(
        self, client: httpx.AsyncClient, db: AsyncSession, case: str
    ) -> None:
        api_client, _ = await make_client(db)
        if case == "inactive":
            api_client.is_active = False
            await db.commit()
        data = {
            "grant_type": "client_credentials",
            "client_id": "nobody" if case == "unknown" else api_client.client_id,
            "client_secret": "wrong" if case == "wrong_secret" else PASSWORD,
        }
        if case == "no_secret":
            del data["client_secret"]
        r = await client.post("/auth/token", data=data)
        assert_oauth_error(r, 401, "invalid_client")

    @pytest.mark.parametrize("header", ["Basic !!!notbase64", "Basic " + "bm9jb2xvbg=="])
    async def test_malformed_basic(self, client: httpx.AsyncClient, header: str) -> None:
        r = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": header},
        )
        assert_oauth_error(r, 401, "invalid_client")
        assert r.headers["www-authenticate"].startswith("Basic")

    async def test_two_authentication_methods(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        api_client, _ = await make_client(db)
        r = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_secret": PASSWORD},
            headers=basic(api_client.client_id, PASSWORD),
        )
        assert_oauth_error(r, 400, "invalid_request")


class TestAuthTokenRequest:
    async def test_missing_grant_type(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/auth/token", data={"username": "13800000000"})
        body = assert_oauth_error(r, 400, "invalid_request")
        assert body["error_description"] == "The parameter grant_type is required"
        assert r.headers["content-type"] == "application/json"

    async def test_empty_body(self, client: httpx.AsyncClient) -> None:
        for content_type in ("", "application/x-www-form-urlencoded"):
            headers = {"Content-Type": content_type} if content_type else {}
            r = await client.post("/auth/token", content=b"", headers=headers)
            assert_oauth_error(r, 400, "invalid_request")

    async def test_unsupported_grant_type(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/auth/token", data={"grant_type": "authorization_code"})
        assert_oauth_error(r, 400, "unsupported_grant_type")

    async def test_json_is_not_form_encoded(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db)
        r = await client.post(
            "/auth/token",
            json={"grant_type": "password", "username": user.phone, "password": PASSWORD},
        )
        assert_oauth_error(r, 400, "invalid_request")

    async def test_repeated_parameter(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        r = await client.post(
            "/auth/token",
            content=(
                f"grant_type=password&username={user.phone}&password={PASSWORD}"
                "&password=other-password"
            ),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_oauth_error(r, 400, "invalid_request")

    @pytest.mark.parametrize("missing", ["username", "password"])
    async def test_password_grant_needs_both(self, client: httpx.AsyncClient, missing: str) -> None:
        data = {"grant_type": "password", "username": "13800000000", "password": "x" * 10}
        del data[missing]
        r = await client.post("/auth/token", data=data)
        body = assert_oauth_error(r, 400, "invalid_request")
        assert missing in body["error_description"]

    async def test_oversized_parameter(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "13800000000", "password": "x" * 5000},
        )
        assert_oauth_error(r, 400, "invalid_request")

    async def test_english_problem_fields(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/auth/token", data={"grant_type": "nope"}, headers={"Accept-Language": "en"}
        )
        body = assert_oauth_error(r, 400, "unsupported_grant_type")
        assert body["title"] == "The grant type is not supported"
        r = await client.post("/auth/token", data={"grant_type": "nope"})
        assert assert_oauth_error(r, 400, "unsupported_grant_type")["title"] == "不支持的授权类型"
