"""GET /me/sessions, DELETE /me/sessions/{id} and POST /auth/logout."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.tokens import decode_access_token
from app.models.auth import UserSession
from app.models.user import User
from tests.fixtures.factories import make_client, make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import (
    assert_oauth_error,
    assert_validation_error,
    bearer,
    password_login,
    refresh,
)


async def sign_in(client: httpx.AsyncClient, user: User, device: str) -> dict[str, str]:
    r = await password_login(client, user.phone, **{"User-Agent": device})
    assert r.status_code == 200, r.text
    tokens: dict[str, str] = r.json()
    return tokens


def session_of(tokens: dict[str, str]) -> uuid.UUID:
    sid = decode_access_token(tokens["access_token"]).session_id
    assert sid is not None
    return sid


async def stored_session(
    sessionmaker: async_sessionmaker[AsyncSession], sid: uuid.UUID
) -> UserSession:
    async with sessionmaker() as s:
        row = await s.get(UserSession, sid)
        assert row is not None
        return row


class TestMeSessionsList:
    async def test_live_sessions_newest_first(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        phone = await sign_in(client, user, "Phone")
        tablet = await sign_in(client, user, "Tablet")
        gone = await sign_in(client, user, "Old laptop")
        expired = await sign_in(client, user, "Expired")
        await client.post(
            "/auth/logout",
            json={"refresh_token": gone["refresh_token"]},
            headers=bearer(gone["access_token"]),
        )
        async with sessionmaker() as s, s.begin():
            row = await s.get(UserSession, session_of(expired))
            assert row is not None
            row.expires_at = clock.now() - timedelta(seconds=1)
        other = await make_user(db)
        await sign_in(client, other, "Someone else's phone")

        r = await client.get("/me/sessions", headers=bearer(tablet["access_token"]))
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["device"] for i in items] == ["Tablet", "Phone"]
        assert [i["current"] for i in items] == [True, False]
        assert items[1]["id"] == str(session_of(phone))
        assert set(items[0]) == {
            "id",
            "device",
            "auth_method",
            "created_at",
            "last_used_at",
            "expires_at",
            "current",
        }
        assert items[0]["auth_method"] == "password"
        assert r.json()["next_cursor"] is None

    async def test_pages(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        signed = [await sign_in(client, user, f"Device {i}") for i in range(3)]
        headers = bearer(signed[0]["access_token"])
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(3):
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/me/sessions", params=params, headers=headers)).json()
            seen += [i["device"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ["Device 2", "Device 1", "Device 0"]

    async def test_bad_paging(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        headers = bearer((await sign_in(client, user, "x"))["access_token"])
        assert_validation_error(
            await client.get("/me/sessions?limit=101", headers=headers), "limit"
        )
        assert_problem(
            await client.get("/me/sessions?cursor=garbage", headers=headers), 422, "invalid_cursor"
        )

    async def test_needs_a_member(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        assert_problem(await client.get("/me/sessions"), 401, "unauthorized")
        _, headers = await make_client(db)
        assert_problem(await client.get("/me/sessions", headers=headers), 403, "members_only")


class TestMeSessionsRevoke:
    async def test_signs_one_device_out(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        phone = await sign_in(client, user, "Phone")
        tablet = await sign_in(client, user, "Tablet")
        r = await client.delete(
            f"/me/sessions/{session_of(tablet)}", headers=bearer(phone["access_token"])
        )
        assert r.status_code == 204, r.text
        assert r.content == b""
        row = await stored_session(sessionmaker, session_of(tablet))
        assert row.revoked_at is not None
        assert row.revoked_reason == "signed_out"
        # The tablet's tokens are dead; the phone's are not.
        assert (await client.get("/me", headers=bearer(tablet["access_token"]))).status_code == 401
        assert_oauth_error(await refresh(client, tablet["refresh_token"]), 401, "invalid_grant")
        assert (await client.get("/me", headers=bearer(phone["access_token"]))).status_code == 200
        # Twice: the session is no longer there.
        again = await client.delete(
            f"/me/sessions/{session_of(tablet)}", headers=bearer(phone["access_token"])
        )
        assert_problem(again, 404, "not_found")

    async def test_another_members_session_is_not_found(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        alice = await make_user(db)
        bob = await make_user(db)
        alice_tokens = await sign_in(client, alice, "Alice's phone")
        bob_tokens = await sign_in(client, bob, "Bob's phone")
        r = await client.delete(
            f"/me/sessions/{session_of(bob_tokens)}", headers=bearer(alice_tokens["access_token"])
        )
        assert_problem(r, 404, "not_found")
        assert (await stored_session(sessionmaker, session_of(bob_tokens))).revoked_at is None
        assert (
            await client.get("/me", headers=bearer(bob_tokens["access_token"]))
        ).status_code == 200
        # Nor does Alice see Bob's sessions.
        listed = await client.get("/me/sessions", headers=bearer(alice_tokens["access_token"]))
        assert [i["id"] for i in listed.json()["items"]] == [str(session_of(alice_tokens))]

    async def test_unknown_or_malformed_id(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db)
        headers = bearer((await sign_in(client, user, "x"))["access_token"])
        assert_problem(
            await client.delete(f"/me/sessions/{uuid.uuid4()}", headers=headers), 404, "not_found"
        )
        assert_validation_error(
            await client.delete("/me/sessions/42", headers=headers), "session_id"
        )

    async def test_the_current_session(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        tokens = await sign_in(client, user, "Phone")
        headers = bearer(tokens["access_token"])
        assert (
            await client.delete(f"/me/sessions/{session_of(tokens)}", headers=headers)
        ).status_code == 204
        assert (await client.get("/me", headers=headers)).status_code == 401


class TestAuthLogout:
    async def test_kills_the_session(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        tokens = await sign_in(client, user, "Phone")
        other_device = await sign_in(client, user, "Tablet")
        r = await client.post(
            "/auth/logout",
            json={"refresh_token": tokens["refresh_token"]},
            headers=bearer(tokens["access_token"]),
        )
        assert r.status_code == 204, r.text
        row = await stored_session(sessionmaker, session_of(tokens))
        assert (row.revoked_at is not None, row.revoked_reason) == (True, "logout")
        assert_oauth_error(await refresh(client, tokens["refresh_token"]), 401, "invalid_grant")
        assert (await client.get("/me", headers=bearer(tokens["access_token"]))).status_code == 401
        # Only that device.
        assert (await refresh(client, other_device["refresh_token"])).status_code == 200

    async def test_with_a_rotated_family(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        first = await sign_in(client, user, "Phone")
        second = (await refresh(client, first["refresh_token"])).json()
        r = await client.post(
            "/auth/logout",
            json={"refresh_token": second["refresh_token"]},
            headers=bearer(second["access_token"]),
        )
        assert r.status_code == 204
        assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 401

    async def test_someone_elses_token_changes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        alice = await make_user(db)
        bob = await make_user(db)
        alice_tokens = await sign_in(client, alice, "Alice's phone")
        bob_tokens = await sign_in(client, bob, "Bob's phone")
        for token in (bob_tokens["refresh_token"], "not-a-token-we-issued"):
            r = await client.post(
                "/auth/logout",
                json={"refresh_token": token},
                headers=bearer(alice_tokens["access_token"]),
            )
            assert r.status_code == 204  # says nothing
        assert (await stored_session(sessionmaker, session_of(bob_tokens))).revoked_at is None
        assert (await stored_session(sessionmaker, session_of(alice_tokens))).revoked_at is None
        assert (await refresh(client, bob_tokens["refresh_token"])).status_code == 200

    async def test_bad_input(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        tokens = await sign_in(client, user, "Phone")
        headers = bearer(tokens["access_token"])
        for body in ({}, {"refresh_token": ""}, {"refresh_token": "x" * 201}, {"refresh_token": 5}):
            assert_validation_error(await client.post("/auth/logout", json=body, headers=headers))
        extra = {"refresh_token": tokens["refresh_token"], "everywhere": True}
        assert_validation_error(
            await client.post("/auth/logout", json=extra, headers=headers), "everywhere"
        )
        async with sessionmaker() as s:
            assert (await s.execute(select(UserSession.revoked_at))).scalar_one() is None

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/auth/logout", json={"refresh_token": "x"})
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
