"""POST /checkins: targets, profile, floating, duplicates, the audit entry and the event."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from app.models.kit import AuditLog, OutboxEvent
from tests.checkins.helpers import (
    count,
    make_member,
    submit,
    written,
)
from tests.fixtures.factories import login, make_user
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


class TestCheckinsCreate:
    async def test_created_pending_with_location(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        member, headers = await make_member(db)
        r = await client.post(
            "/checkins", json={"org_id": str(tree.r1.id), "note": " 住在附近 "}, headers=headers
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "pending"
        assert body["note"] == "住在附近"
        assert body["org"] == {"id": str(tree.r1.id), "name": tree.r1.name, "kind": "regional"}
        assert body["decided_at"] is None
        assert r.headers["location"].endswith(f"/api/v1/checkins/{body['id']}")
        got = await client.get(r.headers["location"], headers=headers)
        assert got.status_code == 200
        assert got.json()["id"] == body["id"]

        async with sessionmaker() as s:
            row = (await s.execute(select(Checkin))).scalar_one()
            assert (row.user_id, row.org_id, row.status) == (member.id, tree.r1.id, "pending")
            entry = (await s.execute(select(AuditLog))).scalar_one()
            assert entry.action == "checkin.submitted"
            assert entry.object_id == body["id"]
            assert (entry.actor_id, entry.org_id) == (member.id, tree.r1.id)
            assert (entry.from_state, entry.to_state) == (None, "pending")
            event = (await s.execute(select(OutboxEvent))).scalar_one()
            assert event.topic == "checkin.submitted"
            assert event.aggregate_id == body["id"]
            assert event.payload["to_state"] == "pending"
            assert event.payload["user_id"] == str(member.id)
            # Ids and states only: no personal data in events.
            assert member.phone not in str(event.payload)

    @pytest.mark.parametrize("target", ["r1", "e1", "b1"])
    async def test_regional_enterprise_and_building_take_checkins(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, target: str
    ) -> None:
        _, headers = await make_member(db)
        body = await submit(client, headers, getattr(tree, target))
        assert body["status"] == "pending"

    @pytest.mark.parametrize("target", ["d1", "s1"])
    async def test_district_or_street_is_refused(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        target: str,
    ) -> None:
        _, headers = await make_member(db)
        before = await written(sessionmaker)
        r = await client.post(
            "/checkins", json={"org_id": str(getattr(tree, target).id)}, headers=headers
        )
        body = assert_problem(r, 422, "checkin_target_invalid")
        assert [e["field"] for e in body["errors"]] == ["org_id"]
        assert await written(sessionmaker) == before

    async def test_unknown_org_is_404(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db)
        r = await client.post("/checkins", json={"org_id": str(uuid.uuid4())}, headers=headers)
        assert_problem(r, 404, "not_found")
        assert await count(sessionmaker, Checkin) == 0

    async def test_incomplete_profile_names_missing_fields(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db, name=" ")  # no party status, no record organization
        headers = await login(db, user)
        before = await written(sessionmaker)
        r = await client.post(
            "/checkins",
            json={"org_id": str(tree.r1.id)},
            headers={**headers, "Accept-Language": "en"},
        )
        body = assert_problem(r, 422, "profile_incomplete")
        assert body["title"] == "Complete your profile before checking in"
        assert [e["field"] for e in body["errors"]] == ["name", "party_status", "record_org_id"]
        assert await written(sessionmaker) == before

    async def test_record_org_of_ours_completes_the_profile(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db, record_org_id=tree.e1.id, record_org_name=None)
        assert (await submit(client, headers, tree.r1))["status"] == "pending"

    async def test_duplicate_active_checkin_is_409(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db)
        await submit(client, headers, tree.r1)
        before = await written(sessionmaker)
        r = await client.post("/checkins", json={"org_id": str(tree.r1.id)}, headers=headers)
        assert_problem(r, 409, "checkin_exists")
        assert await written(sessionmaker) == before

    async def test_duplicate_of_approved_is_409(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        created = await submit(client, headers, tree.r1)
        r = await client.post(f"/checkins/{created['id']}/approve", headers=tree.h_r1)
        assert r.status_code == 200
        r = await client.post("/checkins", json={"org_id": str(tree.r1.id)}, headers=headers)
        assert_problem(r, 409, "checkin_exists")

    async def test_several_organizations_at_once(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        """在职党员“双报到”: one active check-in per organization, not per member."""
        _, headers = await make_member(db)
        for org in (tree.r1, tree.e1, tree.r2, tree.r3):
            await submit(client, headers, org)
        r = await client.get("/me/checkins", headers=headers)
        assert len(r.json()["items"]) == 4

    async def test_again_after_withdrawn_or_rejected(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        first = await submit(client, headers, tree.r1)
        r = await client.post(f"/checkins/{first['id']}/withdraw", headers=headers)
        assert r.status_code == 200
        second = await submit(client, headers, tree.r1)
        r = await client.post(
            f"/checkins/{second['id']}/reject",
            json={"reason": "不在本区域"},
            headers=tree.h_r1,
        )
        assert r.status_code == 200
        third = await submit(client, headers, tree.r1)
        assert len({first["id"], second["id"], third["id"]}) == 3

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"org_id": "not-a-uuid"},
            {"org_id": "ORG", "note": "x"},
            {"org_id": "{org}", "note": "长" * 501},
            {"org_id": "{org}", "status": "approved"},
            {"org_id": "{org}", "note": 5},
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        body: dict[str, object],
    ) -> None:
        _, headers = await make_member(db)
        body = {k: (str(tree.r1.id) if v == "{org}" else v) for k, v in body.items()}
        r = await client.post("/checkins", json=body, headers=headers)
        problem = assert_problem(r, 422, "validation_error")
        assert problem["errors"]
        assert await written(sessionmaker) == (0, 0, 0)

    async def test_needs_a_token(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.post("/checkins", json={"org_id": str(tree.r1.id)})
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


class TestFloating:
    """流动党员: the record organization lies outside the checked-in organization's district."""

    async def test_record_org_in_the_same_district_is_local(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db, record_org_id=tree.e1.id, record_org_name=None)
        assert (await submit(client, headers, tree.r2))["floating"] is False
        assert (await submit(client, headers, tree.b1))["floating"] is False

    async def test_record_org_in_another_district_is_floating(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db, record_org_id=tree.r3.id, record_org_name=None)
        assert (await submit(client, headers, tree.r1))["floating"] is True
        assert (await submit(client, headers, tree.r3))["floating"] is False

    async def test_free_text_record_org_is_floating(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db, record_org_name="温州某企业党支部")
        assert (await submit(client, headers, tree.e1))["floating"] is True

    async def test_snapshot_is_stored(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db, record_org_id=tree.r3.id, record_org_name=None)
        await submit(client, headers, tree.r1)
        assert await count(sessionmaker, Checkin, Checkin.floating.is_(True)) == 1
