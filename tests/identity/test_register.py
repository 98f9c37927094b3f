from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.passwords import verify_password
from app.models.user import User
from tests.fixtures.factories import make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import (
    assert_validation_error,
    count_rows,
    password_login,
)

VALID = {"phone": "13912345678", "password": "long-enough-1", "name": "李四"}


class TestAuthRegister:
    async def test_creates_a_member(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        r = await client.post(
            "/auth/register", json={**VALID, "phone": "+86 139-1234-5678", "name": "  李四 "}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["phone"] == "13912345678"
        assert body["name"] == "李四"
        assert body["role"] == "member"
        assert body["offices"] == []
        assert body["skills"] == []
        assert body["id_number_masked"] is None
        assert "password" not in r.text
        async with sessionmaker() as s:
            user = (await s.execute(select(User).where(User.phone == "13912345678"))).scalar_one()
        assert str(user.id) == body["id"]
        assert user.is_admin is False
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert await verify_password(user.password_hash, VALID["password"])

    async def test_the_new_account_can_sign_in(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/auth/register", json=VALID)).status_code == 201
        r = await password_login(client, VALID["phone"], VALID["password"])
        assert r.status_code == 200, r.text
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert me.json()["name"] == "李四"

    async def test_phone_taken(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        await make_user(db, phone="13912345678")
        r = await client.post("/auth/register", json=VALID)
        body = assert_problem(r, 409, "phone_taken")
        assert body["title"] == "该手机号已注册"
        assert await count_rows(sessionmaker, User) == 1

    async def test_english_on_request(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        await make_user(db, phone="13912345678")
        r = await client.post("/auth/register", json=VALID, headers={"Accept-Language": "en"})
        body = assert_problem(r, 409, "phone_taken")
        assert body["title"] == "This phone number is already registered"

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"phone": "12345"}, "phone"),
            ({"phone": "02112345678"}, "phone"),  # a landline
            ({"phone": "+1 202 555 0100"}, "phone"),
            ({"phone": 13912345678}, "phone"),  # mistyped
            ({"phone": "1" * 21}, "phone"),
            ({"password": "short"}, "password"),
            ({"password": "x" * 129}, "password"),
            ({"name": "   "}, "name"),
            ({"name": "名" * 51}, "name"),
            ({"name": None}, "name"),
            ({"is_admin": True}, "is_admin"),
            ({"role": "admin"}, "role"),
        ],
    )
    async def test_bad_input_writes_nothing(
        self,
        client: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        change: dict[str, Any],
        field: str,
    ) -> None:
        r = await client.post("/auth/register", json={**VALID, **change})
        assert_validation_error(r, field)
        assert await count_rows(sessionmaker, User) == 0

    async def test_missing_fields(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        r = await client.post("/auth/register", json={})
        errors = assert_validation_error(r, "phone", "password", "name")
        assert all(e["message"] == "必填项" for e in errors)
        r = await client.post("/auth/register", json={}, headers={"Accept-Language": "en"})
        assert assert_validation_error(r)[0]["message"] == "Field required"
        assert await count_rows(sessionmaker, User) == 0

    async def test_flood_per_address_is_throttled(
        self,
        client: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "auth_attempts_per_address", 2)
        # One window for the whole test: no count resets halfway through.
        monkeypatch.setattr(app.state.settings, "auth_window_seconds", 10**9)
        for phone in ("13912345670", "13912345671"):
            assert (
                await client.post("/auth/register", json={**VALID, "phone": phone})
            ).status_code == 201
        r = await client.post("/auth/register", json={**VALID, "phone": "13912345672"})
        assert_problem(r, 429, "too_many_requests")
        assert int(r.headers["retry-after"]) >= 1
        assert await count_rows(sessionmaker, User) == 2


class TestWeakPasswords:
    """Passwords a guesser tries first are refused when set; the estimate knows the phone
    number and the name of the account."""

    @pytest.mark.parametrize(
        ("password", "name"),
        [
            ("12345678", "李四"),
            ("password", "李四"),
            ("11111111", "李四"),
            ("qwertyuiop", "李四"),
            ("Passw0rd!", "李四"),
            ("13912345678", "李四"),  # the phone number itself
            ("+8613912345678", "李四"),
            ("wangxiaoming", "Wangxiaoming"),  # the name
            ("李四李四李四李四", "李四"),
        ],
    )
    async def test_refused_and_nothing_written(
        self,
        client: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        password: str,
        name: str,
    ) -> None:
        r = await client.post("/auth/register", json={**VALID, "password": password, "name": name})
        body = assert_problem(r, 422, "weak_password")
        assert [e["field"] for e in body["errors"]] == ["password"]
        assert body["errors"][0].keys() == {"field", "message"}  # the password is not echoed
        assert await count_rows(sessionmaker, User) == 0

    async def test_in_english(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/auth/register",
            json={**VALID, "password": "12345678"},
            headers={"Accept-Language": "en"},
        )
        body = assert_problem(r, 422, "weak_password")
        assert body["title"].startswith("The password is too weak")
        assert body["errors"][0]["message"].startswith("Too weak or too common")

    async def test_a_name_alone_is_not_weak_for_someone_else(
        self, client: httpx.AsyncClient
    ) -> None:
        # The same word is refused as one's own name only.
        r = await client.post(
            "/auth/register", json={**VALID, "password": "wangxiaoming", "name": "李四"}
        )
        assert r.status_code == 201, r.text

    async def test_the_threshold_is_a_setting(
        self, client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(app.state.settings, "password_min_score", 4)
        r = await client.post("/auth/register", json={**VALID, "password": "secret-pass-1"})
        assert_problem(r, 422, "weak_password")
        monkeypatch.setattr(app.state.settings, "password_min_score", 0)
        r = await client.post("/auth/register", json={**VALID, "password": "12345678"})
        assert r.status_code == 201, r.text
        # Sign-in does not re-check the strength of a stored password.
        monkeypatch.setattr(app.state.settings, "password_min_score", 4)
        assert (await password_login(client, VALID["phone"], "12345678")).status_code == 200
