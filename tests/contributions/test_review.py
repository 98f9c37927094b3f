"""Officers: the queue of their subtree, approve / reject / return, the batch review, the
duplicate hint, and what outsiders get."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.contribution import Contribution
from app.models.kit import AuditLog, OutboxEvent
from tests.contributions.helpers import (
    CountQueries,
    World,
    act,
    count,
    create,
    in_state,
    make_credit,
    make_member,
    status_of,
    today,
    written,
)
from tests.fixtures.problems import assert_problem


class TestOrgsContributionsList:
    async def test_queue_of_the_subtree_with_masked_member(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        a = await create(client, world.alice, world.tree.r1, title="甲")
        b = await create(client, world.bob, world.tree.e1, title="乙")
        await create(client, world.carol, world.tree.r3)  # another district
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/contributions",
            params={"status": "pending"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["id"] for i in items] == [a["id"], b["id"]]
        assert items[0]["member"] == {
            "id": str(world.alice.user.id),
            "name": "王小丽",
            "phone_masked": "139****5678",
        }
        assert "13912345678" not in r.text
        assert items[0]["possible_duplicate"] is False
        assert items[1]["org"]["id"] == str(world.tree.e1.id)
        # The enterprise branch's queue is its own; the street sees both regional subtrees.
        r = await client.get(f"/orgs/{world.tree.e1.id}/contributions", headers=world.tree.h_r1)
        assert [i["id"] for i in r.json()["items"]] == [b["id"]]
        r = await client.get(
            f"/orgs/{world.tree.s1.id}/contributions", headers=world.tree.h_s1_worker
        )
        assert len(r.json()["items"]) == 2

    async def test_credits_show_as_approved_and_flag_duplicates(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        day = today() - timedelta(days=1)
        record = await create(client, world.alice, world.tree.r1, occurred_on=day.isoformat())
        credit = await make_credit(db, world.alice, world.tree.r1, day=day, hours=2)
        other = await create(
            client, world.alice, world.tree.r1, occurred_on=(day - timedelta(days=1)).isoformat()
        )
        url = f"/orgs/{world.tree.r1.id}/contributions"
        r = await client.get(url, params={"status": "pending"}, headers=world.tree.h_r1)
        flags = {i["id"]: i["possible_duplicate"] for i in r.json()["items"]}
        # The credit came after the record: the hint is computed when read.
        assert flags == {record["id"]: True, other["id"]: False}
        r = await client.get(url, params={"status": "approved"}, headers=world.tree.h_r1)
        items = r.json()["items"]
        assert [(i["id"], i["source"]) for i in items] == [(str(credit.id), "activity")]
        # Submitted after the credit: flagged and stored.
        later = await create(
            client, world.alice, world.tree.r1, occurred_on=day.isoformat(), hours=1
        )
        async with db.begin():
            stored = await db.get(Contribution, uuid.UUID(later["id"]))
            assert stored is not None and stored.possible_duplicate is True

    async def test_outsiders(self, client: httpx.AsyncClient, world: World) -> None:
        url = f"/orgs/{world.tree.r1.id}/contributions"
        assert_problem(await client.get(url, headers=world.tree.h_r2), 403, "forbidden")
        assert_problem(await client.get(url, headers=world.alice.headers), 403, "forbidden")
        r = await client.get(f"/orgs/{uuid.uuid4()}/contributions", headers=world.tree.h_r1)
        assert_problem(r, 404, "not_found")

    async def test_fixed_number_of_queries(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        count_queries: CountQueries,
    ) -> None:
        async def measure(status: str | None) -> int:
            params = {"status": status} if status else {}
            with count_queries() as q:
                r = await client.get(
                    f"/orgs/{world.tree.s1.id}/contributions",
                    params=params,
                    headers=world.tree.h_s1_worker,
                )
            assert r.status_code == 200
            return q.count

        await create(client, world.alice, world.tree.r1)
        few = (await measure("pending"), await measure(None))
        for i in range(5):
            member = await make_member(db, world.tree.r2)
            await create(client, member, world.tree.r2, title=f"事项{i}")
            await make_credit(db, member, world.tree.r2, day=today(), hours=1)
        assert (await measure("pending"), await measure(None)) == few


class TestDecisions:
    @pytest.mark.parametrize(
        ("action", "payload", "state"),
        [
            ("approve", {"comment": "属实"}, "approved"),
            ("approve", None, "approved"),
            ("reject", {"reason": "与活动记录重复"}, "rejected"),
            ("return", {"reason": "请补充照片"}, "returned"),
        ],
    )
    async def test_decide_with_audit_and_event(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        action: str,
        payload: dict[str, str] | None,
        state: str,
    ) -> None:
        record = await create(client, world.bob, world.tree.e1)
        r = await act(client, world.tree.h_r1, record["id"], action, payload)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["status"] == state
        assert data["decided_by"] == str(world.tree.r1_officer.id)
        comment = (payload or {}).get("comment") or (payload or {}).get("reason")
        assert data["decision_comment"] == comment
        async with sessionmaker() as s:
            entry = (
                await s.execute(
                    select(AuditLog).where(
                        AuditLog.object_id == record["id"],
                        AuditLog.action == f"contribution.{state}",
                    )
                )
            ).scalar_one()
            event = (
                await s.execute(
                    select(OutboxEvent).where(OutboxEvent.topic == f"contribution.{state}")
                )
            ).scalar_one()
        assert entry.actor_id == world.tree.r1_officer.id
        assert (entry.from_state, entry.to_state, entry.comment) == ("pending", state, comment)
        assert entry.org_id == world.tree.e1.id
        assert event.payload["contribution_id"] == record["id"]
        assert event.payload["user_id"] == str(world.bob.user.id)
        # The member sees the decision.
        r = await client.get(f"/contributions/{record['id']}", headers=world.bob.headers)
        assert r.json()["status"] == state

    @pytest.mark.parametrize("action", ["reject", "return"])
    @pytest.mark.parametrize("payload", [None, {}, {"reason": "  "}, {"reason": "x", "y": 1}])
    async def test_reason_required(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        action: str,
        payload: dict[str, object] | None,
    ) -> None:
        record_id = await in_state(client, world, "pending")
        before = await written(sessionmaker)
        r = await act(client, world.tree.h_r1, record_id, action, payload)
        assert_problem(r, 422, "validation_error")
        assert await written(sessionmaker) == before
        assert await status_of(sessionmaker, record_id) == "pending"

    async def test_officer_outside_the_subtree_gets_404(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record_id = await in_state(client, world, "pending")
        before = await written(sessionmaker)
        for headers in (world.tree.h_r2, world.bob.headers):
            r = await act(client, headers, record_id, "approve", {})
            assert_problem(r, 404, "not_found")
        r = await act(client, world.tree.h_r1, str(uuid.uuid4()), "approve", {})
        assert_problem(r, 404, "not_found")
        assert await written(sessionmaker) == before
        assert await status_of(sessionmaker, record_id) == "pending"

    async def test_not_ones_own_record(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        from tests.contributions.helpers import approve_at

        await approve_at(db, world.tree.r1_officer, world.tree.r1)
        officer = type(world.alice)(world.tree.r1_officer, world.tree.h_r1)
        record = await create(client, officer, world.tree.r1)
        r = await act(client, world.tree.h_r1, record["id"], "approve", {})
        assert_problem(r, 403, "review_own_forbidden")
        # The officer above may.
        r = await act(client, world.tree.h_s1_worker, record["id"], "approve", {})
        assert r.status_code == 200, r.text

    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_concurrent_deciders_one_wins(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record_id = await in_state(client, world, "pending")
        results = await asyncio.gather(
            act(client, world.tree.h_r1, record_id, "approve", {}),
            act(client, world.tree.h_s1_worker, record_id, "reject", {"reason": "不实"}),
            act(client, world.tree.h_r1, record_id, "return", {"reason": "补充"}),
            act(client, world.alice.headers, record_id, "withdraw"),
        )
        assert all(r.status_code in (200, 409) for r in results), [r.text for r in results]
        won = {
            action
            for action, r in zip(("approve", "reject", "return", "withdraw"), results, strict=True)
            if r.status_code == 200
        }
        # One decision at most; the owner may still withdraw a record returned to them
        # (returned → withdrawn), or withdraw first and leave nothing to decide.
        assert won in ({"approve"}, {"reject"}, {"return"}, {"withdraw"}, {"return", "withdraw"})
        changes = await count(
            sessionmaker, AuditLog, AuditLog.object_id == record_id, AuditLog.to_state != "pending"
        )
        assert changes == len(won)


class TestContributionsReview:
    async def test_a_result_per_id(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        pending = [await in_state(client, world, "pending") for _ in range(3)]
        approved = await in_state(client, world, "approved")
        elsewhere = (await create(client, world.carol, world.tree.r3))["id"]
        unknown = str(uuid.uuid4())
        ids = [*pending, approved, elsewhere, unknown]
        r = await client.post(
            "/contributions/review",
            json={"ids": ids, "decision": "return", "comment": "请补充材料"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text
        results = {x["id"]: x for x in r.json()["results"]}
        assert [x["id"] for x in r.json()["results"]] == ids
        for record_id in pending:
            assert results[record_id] == {
                "id": record_id,
                "ok": True,
                "status": "returned",
                "code": None,
            }
            assert await status_of(sessionmaker, record_id) == "returned"
        assert results[approved] == {
            "id": approved,
            "ok": False,
            "status": "approved",
            "code": "invalid_transition",
        }
        assert results[elsewhere]["code"] == "not_found"
        assert results[elsewhere]["status"] is None
        assert results[unknown]["code"] == "not_found"
        assert await status_of(sessionmaker, elsewhere) == "pending"
        assert (
            await count(sessionmaker, OutboxEvent, OutboxEvent.topic == "contribution.returned")
            == 3
        )
        assert await count(sessionmaker, AuditLog, AuditLog.action == "contribution.returned") == 3

    async def test_bad_batches(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record_id = await in_state(client, world, "pending")
        before = await written(sessionmaker)
        for payload in (
            {"ids": [record_id], "decision": "reject"},
            {"ids": [record_id, record_id], "decision": "approve"},
            {"ids": [], "decision": "approve"},
            {"ids": [record_id], "decision": "withdraw"},
            {"ids": [str(uuid.uuid4()) for _ in range(101)], "decision": "approve"},
        ):
            r = await client.post("/contributions/review", json=payload, headers=world.tree.h_r1)
            assert_problem(r, 422, "validation_error")
        assert await written(sessionmaker) == before

    async def test_members_who_are_no_officers_get_403(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        record_id = await in_state(client, world, "pending")
        r = await client.post(
            "/contributions/review",
            json={"ids": [record_id], "decision": "approve"},
            headers=world.bob.headers,
        )
        assert_problem(r, 403, "forbidden")

    async def test_fixed_number_of_queries(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        count_queries: CountQueries,
    ) -> None:
        async def measure(n: int) -> int:
            ids = [await in_state(client, world, "pending") for _ in range(n)]
            with count_queries() as q:
                r = await client.post(
                    "/contributions/review",
                    json={"ids": ids, "decision": "approve"},
                    headers=world.tree.h_r1,
                )
            assert all(x["ok"] for x in r.json()["results"])
            return q.count

        assert await measure(1) == await measure(8)
