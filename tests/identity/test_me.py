"""GET /me and PATCH /me."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.crypto import blind_index, decrypt
from app.models.kit import AuditLog
from app.models.user import User
from tests.fixtures.factories import login, make_client, make_officer, make_org, make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import (
    assert_validation_error,
    bad_checksum,
    count_rows,
    fresh_user,
    valid_id_number,
)

ID_NUMBER = valid_id_number("33020319900101123")
OTHER_ID_NUMBER = valid_id_number("33020319850315002")

# Every column PATCH /me may write, to prove that a refused request changed none of them.
PROFILE_COLUMNS = (
    "phone",
    "name",
    "is_admin",
    "is_active",
    "gender",
    "party_status",
    "joined_party_on",
    "record_org_id",
    "record_org_name",
    "employer",
    "post_title",
    "skills",
    "id_number_enc",
    "id_number_index",
    "id_number_masked",
    "updated_at",
)


def snapshot(user: User) -> dict[str, Any]:
    return {name: getattr(user, name) for name in PROFILE_COLUMNS}


class TestMeGet:
    async def test_profile(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(
            db,
            name="王五",
            gender="female",
            party_status="probationary",
            employer="宁波某科技有限公司",
            skills=["电工"],
        )
        r = await client.get("/me", headers=await login(db, user))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body == {
            "id": str(user.id),
            "phone": user.phone,
            "name": "王五",
            "role": "member",
            "gender": "female",
            "party_status": "probationary",
            "joined_party_on": None,
            "record_org_id": None,
            "record_org_name": None,
            "employer": "宁波某科技有限公司",
            "post_title": None,
            "skills": ["电工"],
            "id_number_masked": None,
            "offices": [],
            "created_at": body["created_at"],
        }
        assert r.headers["etag"]

    async def test_admin_role(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        admin = await make_user(db, is_admin=True)
        r = await client.get("/me", headers=await login(db, admin))
        assert r.json()["role"] == "admin"

    async def test_offices_in_a_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, count_queries: Any
    ) -> None:
        user = await make_user(db)
        district = await make_org(db, name="奉化区")
        orgs = [await make_org(db, district, name=f"力邦村党总支{i}") for i in range(3)]
        for org in orgs:
            await make_officer(db, org, user, role="worker")
        await make_officer(db, district, user, role="secretary")
        await make_officer(db, await make_org(db, name="别人的组织"))  # someone else's office
        headers = await login(db, user)
        with count_queries() as q:
            r = await client.get("/me", headers=headers)
        assert r.status_code == 200
        assert q.count == 2, q.statements  # the caller, then the offices with their orgs
        offices = r.json()["offices"]
        assert [o["org_name"] for o in offices] == [
            "力邦村党总支0",
            "力邦村党总支1",
            "力邦村党总支2",
            "奉化区",
        ]
        assert offices[-1] == {
            "org_id": str(district.id),
            "org_name": "奉化区",
            "role": "secretary",
        }

    async def test_etag(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        headers = await login(db, user)
        r = await client.get("/me", headers=headers)
        again = await client.get("/me", headers={**headers, "If-None-Match": r.headers["etag"]})
        assert again.status_code == 304

    async def test_city_client_is_not_a_member(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        _, headers = await make_client(db)
        assert_problem(await client.get("/me", headers=headers), 403, "members_only")


class TestMeUpdate:
    async def test_updates_the_fields_sent(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db, employer="旧单位", post_title="工程师")
        payload = {
            "name": "  赵六 ",
            "gender": "male",
            "party_status": "full",
            "joined_party_on": "2010-07-01",
            "record_org_name": "外省某县委组织部",
            "employer": "新单位",
            "skills": ["调解", " 巡逻 "],
        }
        r = await client.patch("/me", json=payload, headers=await login(db, user))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["name"] == "赵六"
        assert body["gender"] == "male"
        assert body["party_status"] == "full"
        assert body["joined_party_on"] == "2010-07-01"
        assert body["record_org_name"] == "外省某县委组织部"
        assert body["employer"] == "新单位"
        assert body["post_title"] == "工程师"  # not sent: kept
        assert body["skills"] == ["调解", "巡逻"]
        stored = await fresh_user(sessionmaker, user)
        assert stored.name == "赵六"
        assert stored.joined_party_on is not None
        assert stored.joined_party_on.isoformat() == "2010-07-01"
        assert stored.skills == ["调解", "巡逻"]
        assert stored.post_title == "工程师"
        async with sessionmaker() as s:
            entry = (await s.execute(select(AuditLog))).scalar_one()
        assert entry.action == "profile.update"
        assert entry.actor_id == user.id
        assert entry.object_id == str(user.id)

    async def test_null_clears(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db, employer="单位", gender="male", skills=["电工"])
        r = await client.patch(
            "/me",
            json={"employer": None, "gender": None, "skills": None},
            headers=await login(db, user),
        )
        assert r.status_code == 200, r.text
        stored = await fresh_user(sessionmaker, user)
        assert (stored.employer, stored.gender, stored.skills) == (None, None, [])
        assert stored.name == user.name

    async def test_empty_patch_changes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db, employer="单位")
        before = snapshot(await fresh_user(sessionmaker, user))
        r = await client.patch("/me", json={}, headers=await login(db, user))
        assert r.status_code == 200
        assert snapshot(await fresh_user(sessionmaker, user)) == before

    async def test_record_org(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        org = await make_org(db)
        user = await make_user(db, record_org_name="外地")
        headers = await login(db, user)
        r = await client.patch("/me", json={"record_org_id": str(org.id)}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["record_org_id"] == str(org.id)
        assert r.json()["record_org_name"] is None  # the record sits in one place
        r = await client.patch("/me", json={"record_org_name": "外省"}, headers=headers)
        assert (r.json()["record_org_id"], r.json()["record_org_name"]) == (None, "外省")

    async def test_unknown_record_org(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        before = snapshot(await fresh_user(sessionmaker, user))
        r = await client.patch(
            "/me",
            json={"name": "改了吗", "record_org_id": "5f0c6f5e-9a53-4c1b-9d0e-2a51e1f0a001"},
            headers={**await login(db, user), "Accept-Language": "en"},
        )
        errors = assert_validation_error(r, "record_org_id")
        assert errors[0]["message"] == "No such organization"
        assert snapshot(await fresh_user(sessionmaker, user)) == before

    async def test_id_number_is_encrypted_and_masked(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        headers = await login(db, user)
        r = await client.patch("/me", json={"id_number": ID_NUMBER.lower()}, headers=headers)
        assert r.status_code == 200, r.text
        masked = ID_NUMBER[:4] + "*" * 10 + ID_NUMBER[-4:]
        assert r.json()["id_number_masked"] == masked
        assert "id_number" not in r.json()
        assert ID_NUMBER not in r.text
        stored = await fresh_user(sessionmaker, user)
        assert stored.id_number_enc is not None
        assert ID_NUMBER.encode() not in stored.id_number_enc
        assert ID_NUMBER[6:14].encode() not in stored.id_number_enc  # not even the birth date
        assert decrypt(stored.id_number_enc, context="users.id_number") == ID_NUMBER
        assert stored.id_number_index == blind_index(ID_NUMBER, context="users.id_number")
        assert stored.id_number_masked == masked
        got = await client.get("/me", headers=headers)
        assert got.json()["id_number_masked"] == masked
        assert ID_NUMBER not in got.text
        # Cleared with null: all three columns go.
        r = await client.patch("/me", json={"id_number": None}, headers=headers)
        assert r.json()["id_number_masked"] is None
        stored = await fresh_user(sessionmaker, user)
        assert (stored.id_number_enc, stored.id_number_index, stored.id_number_masked) == (
            None,
            None,
            None,
        )

    async def test_id_number_of_another_account(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        holder = await make_user(db)
        assert (
            await client.patch(
                "/me", json={"id_number": ID_NUMBER}, headers=await login(db, holder)
            )
        ).status_code == 200
        user = await make_user(db)
        headers = await login(db, user)
        r = await client.patch(
            "/me", json={"name": "新名", "id_number": ID_NUMBER}, headers=headers
        )
        # Answered as if saved (an answer that would tell whether the number is a member's
        # is an oracle); the number is not put on the account, only kept aside.
        assert r.status_code == 200, r.text
        assert r.json()["id_number_masked"] == "3302**********" + ID_NUMBER[-4:]
        stored = await fresh_user(sessionmaker, user)
        assert (stored.name, stored.id_number_index, stored.id_number_enc) == ("新名", None, None)
        held = await fresh_user(sessionmaker, holder)
        assert held.id_number_index == blind_index(ID_NUMBER, context="users.id_number")
        # Saving one's own number again is fine; another number too.
        again = await client.patch(
            "/me", json={"id_number": ID_NUMBER}, headers=await login(db, holder)
        )
        assert again.status_code == 200
        assert (
            await client.patch("/me", json={"id_number": OTHER_ID_NUMBER}, headers=headers)
        ).status_code == 200
        stored = await fresh_user(sessionmaker, user)
        assert stored.id_number_index == blind_index(OTHER_ID_NUMBER, context="users.id_number")

    @pytest.mark.parametrize(
        ("payload", "field"),
        [
            ({"is_admin": True}, "is_admin"),
            ({"role": "admin"}, "role"),
            ({"phone": "13912345678"}, "phone"),
            ({"nickname": "x"}, "nickname"),
            ({"id_number_masked": "3302**********1234"}, "id_number_masked"),
            ({"id_number": bad_checksum(ID_NUMBER)}, "id_number"),
            ({"id_number": "33020319900101123"}, "id_number"),  # too short
            ({"id_number": 330203199001011236}, "id_number"),  # mistyped
            ({"name": None}, "name"),
            ({"name": ""}, "name"),
            ({"name": "名" * 51}, "name"),
            ({"gender": "other"}, "gender"),
            ({"party_status": "member"}, "party_status"),
            ({"joined_party_on": "yesterday"}, "joined_party_on"),
            ({"joined_party_on": "2999-01-01"}, "joined_party_on"),
            ({"record_org_id": "not-a-uuid"}, "record_org_id"),
            ({"record_org_name": "名" * 101}, "record_org_name"),
            ({"employer": 12345}, "employer"),
            ({"employer": "x" * 101}, "employer"),
            ({"post_title": "x" * 51}, "post_title"),
            ({"skills": "电工"}, "skills"),
            ({"skills": [f"技能{i}" for i in range(21)]}, "skills"),
            ({"skills": ["x" * 31]}, "skills.0"),
            ({"skills": [" "]}, "skills.0"),
        ],
    )
    async def test_refused_input_changes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        payload: dict[str, Any],
        field: str,
    ) -> None:
        user = await make_user(db, employer="单位")
        before = snapshot(await fresh_user(sessionmaker, user))
        # A valid change travels along: it must not be applied either.
        r = await client.patch(
            "/me", json={"post_title": "改了", **payload}, headers=await login(db, user)
        )
        assert_validation_error(r, field)
        assert snapshot(await fresh_user(sessionmaker, user)) == before
        assert await count_rows(sessionmaker, AuditLog) == 0

    async def test_both_record_fields(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        org = await make_org(db)
        user = await make_user(db)
        r = await client.patch(
            "/me",
            json={"record_org_id": str(org.id), "record_org_name": "外省"},
            headers=await login(db, user),
        )
        assert_validation_error(r)

    async def test_joined_today_is_fine(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        today = clock.local_today()
        r = await client.patch(
            "/me", json={"joined_party_on": today.isoformat()}, headers=await login(db, user)
        )
        assert r.status_code == 200, r.text
        tomorrow = today + timedelta(days=1)
        r = await client.patch(
            "/me", json={"joined_party_on": tomorrow.isoformat()}, headers=await login(db, user)
        )
        assert_validation_error(r, "joined_party_on")

    async def test_not_json(self, client: httpx.AsyncClient, db: AsyncSession) -> None:
        user = await make_user(db)
        r = await client.patch(
            "/me",
            content=b"{not json",
            headers={**await login(db, user), "Content-Type": "application/json"},
        )
        assert_validation_error(r)

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        r = await client.patch("/me", json={"name": "x"})
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
