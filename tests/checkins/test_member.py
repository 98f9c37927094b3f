"""The member's own check-ins: list, one, withdraw (pending → withdrawn), leave (approved →
left); someone else's is a 404."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.kit import AuditLog, OutboxEvent
from tests.checkins.helpers import (
    CountQueries,
    approve,
    in_state,
    make_member,
    status_of,
    submit,
    written,
)
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


class TestCheckinsWithdraw:
    async def test_pending_to_withdrawn(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, headers = await in_state(client, db, tree, "pending")
        r = await client.post(f"/checkins/{checkin_id}/withdraw", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "withdrawn"
        assert body["ended_at"] is not None
        assert await status_of(sessionmaker, checkin_id) == "withdrawn"
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.withdrawn"))
            ).scalar_one()
            assert (entry.from_state, entry.to_state) == ("pending", "withdrawn")
            assert entry.object_id == checkin_id
            topics = (await s.execute(select(OutboxEvent.topic))).scalars().all()
            assert sorted(topics) == ["checkin.submitted", "checkin.withdrawn"]

    @pytest.mark.parametrize("state", ["approved", "rejected", "withdrawn", "left"])
    async def test_refused_unless_pending(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        state: str,
    ) -> None:
        checkin_id, headers = await in_state(client, db, tree, state)
        before = await written(sessionmaker)
        r = await client.post(f"/checkins/{checkin_id}/withdraw", headers=headers)
        assert_problem(r, 409, "invalid_transition")
        assert await status_of(sessionmaker, checkin_id) == state
        assert await written(sessionmaker) == before

    async def test_someone_elses_is_404(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        _, other = await make_member(db)
        for who in (other, tree.h_r1):
            r = await client.post(f"/checkins/{checkin_id}/withdraw", headers=who)
            assert_problem(r, 404, "not_found")
        assert await status_of(sessionmaker, checkin_id) == "pending"

    async def test_unknown_or_malformed_id(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        r = await client.post(f"/checkins/{uuid.uuid4()}/withdraw", headers=headers)
        assert_problem(r, 404, "not_found")
        r = await client.post("/checkins/12/withdraw", headers=headers)
        assert_problem(r, 422, "validation_error")


class TestCheckinsLeave:
    async def test_approved_to_left(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, headers = await in_state(client, db, tree, "approved")
        r = await client.post(f"/checkins/{checkin_id}/leave", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "left"
        assert await status_of(sessionmaker, checkin_id) == "left"
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.left"))
            ).scalar_one()
            assert (entry.from_state, entry.to_state) == ("approved", "left")
            event = (
                await s.execute(select(OutboxEvent).where(OutboxEvent.topic == "checkin.left"))
            ).scalar_one()
            assert event.aggregate_id == checkin_id
        # Having left, the member may check in there again.
        again = await submit(client, headers, tree.r1)
        assert again["id"] != checkin_id

    @pytest.mark.parametrize("state", ["pending", "rejected", "withdrawn", "left"])
    async def test_refused_unless_approved(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        state: str,
    ) -> None:
        checkin_id, headers = await in_state(client, db, tree, state)
        before = await written(sessionmaker)
        r = await client.post(f"/checkins/{checkin_id}/leave", headers=headers)
        assert_problem(r, 409, "invalid_transition")
        assert await status_of(sessionmaker, checkin_id) == state
        assert await written(sessionmaker) == before

    async def test_someone_elses_is_404(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "approved")
        _, other = await make_member(db)
        for who in (other, tree.h_r1):
            r = await client.post(f"/checkins/{checkin_id}/leave", headers=who)
            assert_problem(r, 404, "not_found")
        assert await status_of(sessionmaker, checkin_id) == "approved"


class TestCheckinsGet:
    async def test_own_only(self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree) -> None:
        checkin_id, headers = await in_state(client, db, tree, "pending")
        r = await client.get(f"/checkins/{checkin_id}", headers=headers)
        assert r.status_code == 200
        assert r.headers["etag"]
        r2 = await client.get(
            f"/checkins/{checkin_id}", headers={**headers, "If-None-Match": r.headers["etag"]}
        )
        assert r2.status_code == 304
        _, other = await make_member(db)
        assert_problem(await client.get(f"/checkins/{checkin_id}", headers=other), 404, "not_found")


class TestMeCheckinsList:
    async def test_own_every_state_newest_first_with_org(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        first = await submit(client, headers, tree.r1)
        await approve(client, tree.h_r1, first["id"])
        second = await submit(client, headers, tree.e1, note="周末有空")
        r = await client.post(f"/checkins/{second['id']}/withdraw", headers=headers)
        assert r.status_code == 200
        third = await submit(client, headers, tree.r3)
        # Someone else's does not show.
        _, other = await make_member(db)
        await submit(client, other, tree.r1)

        r = await client.get("/me/checkins", headers=headers)
        assert r.status_code == 200
        body = r.json()
        assert [i["id"] for i in body["items"]] == [third["id"], second["id"], first["id"]]
        assert [i["status"] for i in body["items"]] == ["pending", "withdrawn", "approved"]
        assert body["items"][1]["org"] == {
            "id": str(tree.e1.id),
            "name": tree.e1.name,
            "kind": "enterprise",
        }
        assert body["items"][1]["note"] == "周末有空"
        assert body["items"][2]["decided_at"] is not None
        assert body["next_cursor"] is None

    async def test_cursor_pages(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        ids = [(await submit(client, headers, org))["id"] for org in (tree.r1, tree.e1, tree.b1)]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/me/checkins", params=params, headers=headers)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        r = await client.get("/me/checkins", params={"cursor": "garbage!"}, headers=headers)
        assert_problem(r, 422, "invalid_cursor")
        r = await client.get("/me/checkins", params={"limit": 101}, headers=headers)
        assert_problem(r, 422, "validation_error")

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: CountQueries
    ) -> None:
        _, headers = await make_member(db)
        await submit(client, headers, tree.r1)

        async def queries() -> int:
            with count_queries() as q:
                r = await client.get("/me/checkins", headers=headers)
            assert r.status_code == 200
            return q.count

        one = await queries()
        for org in (tree.e1, tree.b1, tree.r2, tree.r3):
            await submit(client, headers, org)
        assert await queries() == one
