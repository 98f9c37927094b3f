"""Officers: the queue of their subtree, approve, reject and the batch review."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from app.models.kit import AuditLog, OutboxEvent
from tests.checkins.helpers import (
    CountQueries,
    approve,
    count,
    in_state,
    make_member,
    status_of,
    submit,
    written,
)
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


class TestOrgsCheckinsList:
    async def test_queue_of_the_subtree_with_what_a_secretary_needs(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        member, headers = await make_member(
            db, name="陈五", phone="13912345678", employer="甬新科技有限公司"
        )
        at_r1 = await submit(client, headers, tree.r1, note="住在天一广场附近")
        at_e1 = await submit(client, headers, tree.e1)
        local, local_headers = await make_member(db, record_org_id=tree.e1.id, record_org_name=None)
        at_b1 = await submit(client, local_headers, tree.b1)
        await submit(client, headers, tree.r2)  # a sibling subtree: not in r1's queue

        r = await client.get(f"/orgs/{tree.r1.id}/checkins", headers=tree.h_r1)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["id"] for i in items] == [at_r1["id"], at_e1["id"], at_b1["id"]]
        first = items[0]
        assert first["status"] == "pending"
        assert first["org"] == {"id": str(tree.r1.id), "name": tree.r1.name, "kind": "regional"}
        assert first["note"] == "住在天一广场附近"
        assert first["floating"] is True
        assert first["submitted_at"] == at_r1["submitted_at"]
        assert first["member"] == {
            "id": str(member.id),
            "name": "陈五",
            "phone_masked": "139****5678",
            "party_status": "full",
            "employer": "甬新科技有限公司",
            "record_org": {"id": None, "name": "宁波某外地企业党支部"},
        }
        assert "13912345678" not in r.text
        assert items[2]["floating"] is False
        assert items[2]["member"]["record_org"] == {"id": str(tree.e1.id), "name": tree.e1.name}
        assert str(local.id) == items[2]["member"]["id"]

        # The street's officer sees both regional subtrees.
        r = await client.get(f"/orgs/{tree.s1.id}/checkins", headers=tree.h_s1_worker)
        assert len(r.json()["items"]) == 4
        # An enterprise branch's queue is its own subtree's only (b1 lies below e1).
        r = await client.get(f"/orgs/{tree.e1.id}/checkins", headers=tree.h_r1)
        assert [i["id"] for i in r.json()["items"]] == [at_e1["id"], at_b1["id"]]

    async def test_status_filter_and_pages(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        pending = [(await in_state(client, db, tree, "pending"))[0] for _ in range(3)]
        approved, _ = await in_state(client, db, tree, "approved")
        r = await client.get(
            f"/orgs/{tree.r1.id}/checkins",
            params={"status": "approved"},
            headers=tree.h_r1,
        )
        assert [i["id"] for i in r.json()["items"]] == [approved]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"status": "pending", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (
                await client.get(f"/orgs/{tree.r1.id}/checkins", params=params, headers=tree.h_r1)
            ).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == pending
        r = await client.get(
            f"/orgs/{tree.r1.id}/checkins", params={"status": "maybe"}, headers=tree.h_r1
        )
        assert_problem(r, 422, "validation_error")

    async def test_outsiders(self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree) -> None:
        await in_state(client, db, tree, "pending")
        _, member = await make_member(db)
        for who in (tree.h_r2, member):
            r = await client.get(f"/orgs/{tree.r1.id}/checkins", headers=who)
            assert_problem(r, 403, "forbidden")
        # An officer below cannot read above.
        r = await client.get(f"/orgs/{tree.s1.id}/checkins", headers=tree.h_r1)
        assert_problem(r, 403, "forbidden")
        r = await client.get(f"/orgs/{uuid.uuid4()}/checkins", headers=tree.h_r1)
        assert_problem(r, 404, "not_found")
        r = await client.get(f"/orgs/{tree.r1.id}/checkins")
        assert_problem(r, 401, "unauthorized")

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: CountQueries
    ) -> None:
        await in_state(client, db, tree, "pending")

        async def queries() -> int:
            with count_queries() as q:
                r = await client.get(f"/orgs/{tree.s1.id}/checkins", headers=tree.h_s1_worker)
            assert r.status_code == 200
            return q.count

        one = await queries()
        for org in ("e1", "b1", "r2", "r1", "e1"):
            await in_state(client, db, tree, "pending", org=org)
        assert await queries() == one


class TestCheckinsApprove:
    async def test_pending_to_approved(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, member_headers = await in_state(client, db, tree, "pending", org="e1")
        r = await client.post(
            f"/checkins/{checkin_id}/approve",
            json={"comment": "欢迎加入"},
            headers=tree.h_r1,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "approved"
        assert body["decided_by"] == str(tree.r1_officer.id)
        assert body["decision_comment"] == "欢迎加入"
        assert body["decided_at"] is not None
        assert await status_of(sessionmaker, checkin_id) == "approved"
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.approved"))
            ).scalar_one()
            assert entry.actor_id == tree.r1_officer.id
            assert entry.org_id == tree.e1.id
            assert (entry.from_state, entry.to_state, entry.comment) == (
                "pending",
                "approved",
                "欢迎加入",
            )
            event = (
                await s.execute(select(OutboxEvent).where(OutboxEvent.topic == "checkin.approved"))
            ).scalar_one()
            assert event.payload["checkin_id"] == checkin_id
            assert event.payload["actor_id"] == str(tree.r1_officer.id)
        mine = (await client.get("/me/checkins", headers=member_headers)).json()["items"]
        assert mine[0]["status"] == "approved"
        assert mine[0]["decision_comment"] == "欢迎加入"

    async def test_without_a_body_and_from_above(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        r = await client.post(f"/checkins/{checkin_id}/approve", headers=tree.h_s1_worker)
        assert r.status_code == 200, r.text
        assert r.json()["decision_comment"] is None

    @pytest.mark.parametrize("state", ["approved", "rejected", "withdrawn", "left"])
    async def test_refused_unless_pending(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        state: str,
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, state)
        before = await written(sessionmaker)
        r = await client.post(f"/checkins/{checkin_id}/approve", json={}, headers=tree.h_r1)
        assert_problem(r, 409, "invalid_transition")
        assert await status_of(sessionmaker, checkin_id) == state
        assert await written(sessionmaker) == before

    async def test_outside_the_subtree_is_404(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, member_headers = await in_state(client, db, tree, "pending")
        _, stranger = await make_member(db)
        for who in (tree.h_r2, stranger, member_headers):
            r = await client.post(f"/checkins/{checkin_id}/approve", json={}, headers=who)
            assert_problem(r, 404, "not_found")
        # r1's officer does not reach into the sibling r2 either.
        at_r2, _ = await in_state(client, db, tree, "pending", org="r2")
        r = await client.post(f"/checkins/{at_r2}/approve", json={}, headers=tree.h_r1)
        assert_problem(r, 404, "not_found")
        r = await client.post(f"/checkins/{uuid.uuid4()}/approve", headers=tree.h_r1)
        assert_problem(r, 404, "not_found")
        assert await count(sessionmaker, Checkin, Checkin.status != "pending") == 0

    @pytest.mark.parametrize("body", [{"comment": "长" * 501}, {"comment": 1}, {"reason": "x"}])
    async def test_bad_input(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        body: dict[str, object],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        before = await written(sessionmaker)
        r = await client.post(f"/checkins/{checkin_id}/approve", json=body, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")
        assert await status_of(sessionmaker, checkin_id) == "pending"
        assert await written(sessionmaker) == before


class TestCheckinsReject:
    async def test_pending_to_rejected(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        r = await client.post(
            f"/checkins/{checkin_id}/reject",
            json={"reason": "  请到居住地所在社区报到 "},
            headers=tree.h_r1,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "rejected"
        assert r.json()["decision_comment"] == "请到居住地所在社区报到"
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.rejected"))
            ).scalar_one()
            assert (entry.from_state, entry.to_state) == ("pending", "rejected")
            assert entry.comment == "请到居住地所在社区报到"
            assert entry.actor_id == tree.r1_officer.id
            assert (
                await s.scalar(select(OutboxEvent).where(OutboxEvent.topic == "checkin.rejected"))
            ) is not None

    @pytest.mark.parametrize("state", ["approved", "rejected", "withdrawn", "left"])
    async def test_refused_unless_pending(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        state: str,
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, state)
        before = await written(sessionmaker)
        r = await client.post(
            f"/checkins/{checkin_id}/reject", json={"reason": "不符合"}, headers=tree.h_r1
        )
        assert_problem(r, 409, "invalid_transition")
        assert await status_of(sessionmaker, checkin_id) == state
        assert await written(sessionmaker) == before

    @pytest.mark.parametrize(
        "body", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": "长" * 501}]
    )
    async def test_reason_required(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        body: dict[str, str] | None,
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        before = await written(sessionmaker)
        r = await client.post(f"/checkins/{checkin_id}/reject", json=body, headers=tree.h_r1)
        problem = assert_problem(r, 422, "validation_error")
        assert problem["errors"]
        assert await status_of(sessionmaker, checkin_id) == "pending"
        assert await written(sessionmaker) == before

    async def test_outside_the_subtree_is_404(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, member_headers = await in_state(client, db, tree, "pending")
        for who in (tree.h_r2, member_headers):
            r = await client.post(
                f"/checkins/{checkin_id}/reject", json={"reason": "不行"}, headers=who
            )
            assert_problem(r, 404, "not_found")
        assert await status_of(sessionmaker, checkin_id) == "pending"


class TestCheckinsReview:
    async def test_mixed_batch(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        ok_r1, _ = await in_state(client, db, tree, "pending")
        ok_e1, _ = await in_state(client, db, tree, "pending", org="e1")
        foreign, _ = await in_state(client, db, tree, "pending", org="r2")
        decided, _ = await in_state(client, db, tree, "rejected")
        withdrawn, _ = await in_state(client, db, tree, "withdrawn")
        unknown = str(uuid.uuid4())
        ids = [ok_r1, foreign, decided, unknown, ok_e1, withdrawn]
        r = await client.post(
            "/checkins/review",
            json={"ids": ids, "decision": "approve", "comment": "同意"},
            headers=tree.h_r1,
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": ok_r1, "ok": True, "status": "approved", "code": None},
            {"id": foreign, "ok": False, "status": None, "code": "not_found"},
            {"id": decided, "ok": False, "status": "rejected", "code": "invalid_transition"},
            {"id": unknown, "ok": False, "status": None, "code": "not_found"},
            {"id": ok_e1, "ok": True, "status": "approved", "code": None},
            {"id": withdrawn, "ok": False, "status": "withdrawn", "code": "invalid_transition"},
        ]
        assert await status_of(sessionmaker, ok_r1) == "approved"
        assert await status_of(sessionmaker, ok_e1) == "approved"
        assert await status_of(sessionmaker, foreign) == "pending"
        async with sessionmaker() as s:
            entries = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.approved"))
            ).scalars()
            assert sorted(e.object_id or "" for e in entries) == sorted([ok_r1, ok_e1])
        assert await count(sessionmaker, OutboxEvent, OutboxEvent.topic == "checkin.approved") == 2

    async def test_reject_batch_needs_a_reason(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        before = await written(sessionmaker)
        for body in (
            {"ids": [checkin_id], "decision": "reject"},
            {"ids": [checkin_id], "decision": "reject", "comment": "  "},
        ):
            r = await client.post("/checkins/review", json=body, headers=tree.h_r1)
            problem = assert_problem(r, 422, "validation_error")
            assert [e["field"] for e in problem["errors"]] == ["comment"]
        assert await written(sessionmaker) == before
        r = await client.post(
            "/checkins/review",
            json={"ids": [checkin_id], "decision": "reject", "comment": "材料不全"},
            headers=tree.h_r1,
        )
        assert r.json()["results"] == [
            {"id": checkin_id, "ok": True, "status": "rejected", "code": None}
        ]
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "checkin.rejected"))
            ).scalar_one()
            assert entry.comment == "材料不全"

    @pytest.mark.parametrize(
        "body",
        [
            {"ids": [], "decision": "approve"},
            {"ids": ["{id}", "{id}"], "decision": "approve"},
            {"ids": [str(uuid.uuid4()) for _ in range(101)], "decision": "approve"},
            {"ids": ["{id}"], "decision": "maybe"},
            {"ids": ["nope"], "decision": "approve"},
            {"ids": ["{id}"]},
            {"ids": ["{id}"], "decision": "approve", "extra": 1},
        ],
    )
    async def test_bad_input(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        body: dict[str, object],
    ) -> None:
        checkin_id, _ = await in_state(client, db, tree, "pending")
        ids = body.get("ids")
        if isinstance(ids, list):
            body = {**body, "ids": [checkin_id if i == "{id}" else i for i in ids]}
        before = await written(sessionmaker)
        r = await client.post("/checkins/review", json=body, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")
        assert await status_of(sessionmaker, checkin_id) == "pending"
        assert await written(sessionmaker) == before

    async def test_not_an_officer(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        checkin_id, member_headers = await in_state(client, db, tree, "pending")
        r = await client.post(
            "/checkins/review",
            json={"ids": [checkin_id], "decision": "approve"},
            headers=member_headers,
        )
        assert_problem(r, 403, "forbidden")
        assert await status_of(sessionmaker, checkin_id) == "pending"

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: CountQueries
    ) -> None:
        async def queries(n: int) -> int:
            ids = [(await in_state(client, db, tree, "pending"))[0] for _ in range(n)]
            ids.append(str(uuid.uuid4()))
            with count_queries() as q:
                r = await client.post(
                    "/checkins/review",
                    json={"ids": ids, "decision": "approve"},
                    headers=tree.h_r1,
                )
            assert r.status_code == 200
            assert [x["ok"] for x in r.json()["results"]] == [True] * n + [False]
            return q.count

        assert await queries(1) == await queries(6)


async def test_decided_member_can_be_approved_again_after_leaving(
    client: httpx.AsyncClient, db: AsyncSession, tree: Tree
) -> None:
    checkin_id, headers = await in_state(client, db, tree, "left")
    again = await submit(client, headers, tree.r1)
    await approve(client, tree.h_r1, again["id"])
    mine = (await client.get("/me/checkins", headers=headers)).json()["items"]
    assert [(i["id"], i["status"]) for i in mine] == [
        (again["id"], "approved"),
        (checkin_id, "left"),
    ]
