"""An officer never decides their own check-in: 403 `review_own_forbidden` one by one, a
per-id result of that code in a batch, and the refusal lives in the conditional UPDATE."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import review
from app.authz import EVERYTHING
from app.checkins.reviewable import CHECKINS
from app.core import clock
from app.models.enums import CheckinStatus
from app.models.kit import AuditLog, OutboxEvent
from app.models.user import User
from tests.checkins.helpers import (
    count,
    in_state,
    make_member,
    status_of,
    submit,
    written,
)
from tests.fixtures.factories import make_officer
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


async def officer_of_r1(db: AsyncSession, tree: Tree) -> tuple[User, dict[str, str]]:
    """A secretary of r1 with a complete profile, so that they can check in themselves."""
    officer, headers = await make_member(db, name="孙书记")
    await make_officer(db, tree.r1, officer)
    return officer, headers


class TestDecideOwnCheckin:
    @pytest.mark.parametrize(
        ("action", "body"), [("approve", {}), ("reject", {"reason": "不符合条件"})]
    )
    @pytest.mark.parametrize("org", ["r1", "e1"])
    async def test_own_pending_checkin_is_403_and_nothing_written(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
        action: str,
        body: dict[str, str],
        org: str,
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, getattr(tree, org)))["id"]
        before = await written(sessionmaker)

        r = await client.post(f"/checkins/{own}/{action}", json=body, headers=headers)
        problem = assert_problem(r, 403, "review_own_forbidden")
        assert problem["title"] == "不能审核本人的记录"

        assert await written(sessionmaker) == before
        assert await status_of(sessionmaker, own) == "pending"

    async def test_message_in_english(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, tree.r1))["id"]
        r = await client.post(
            f"/checkins/{own}/approve", json={}, headers={**headers, "Accept-Language": "en"}
        )
        problem = assert_problem(r, 403, "review_own_forbidden")
        assert problem["title"] == "You may not review your own record"
        assert problem["type"] == "urn:quyu:problem:review_own_forbidden"

    async def test_an_officer_above_decides_it(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        officer, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, tree.r1))["id"]
        # A fellow officer of r1 may, and so may the street's officer above.
        r = await client.post(f"/checkins/{own}/approve", json={}, headers=tree.h_r1)
        assert r.status_code == 200, r.text
        assert r.json()["decided_by"] == str(tree.r1_officer.id)
        assert await status_of(sessionmaker, own) == "approved"

        other = (await submit(client, headers, tree.e1))["id"]
        r = await client.post(
            f"/checkins/{other}/reject", json={"reason": "重复登记"}, headers=tree.h_s1_worker
        )
        assert r.status_code == 200, r.text
        assert await status_of(sessionmaker, other) == "rejected"
        assert await count(sessionmaker, AuditLog, AuditLog.actor_id == officer.id) == 2

    async def test_own_checkin_not_pending_is_still_409(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, tree.r1))["id"]
        r = await client.post(f"/checkins/{own}/withdraw", headers=headers)
        assert r.status_code == 200, r.text
        r = await client.post(f"/checkins/{own}/approve", json={}, headers=headers)
        assert_problem(r, 409, "invalid_transition")

    async def test_deciding_others_is_unchanged(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        await submit(client, headers, tree.r1)  # own one, pending, in the same queue
        someone, _ = await in_state(client, db, tree, "pending")
        r = await client.post(f"/checkins/{someone}/approve", json={}, headers=headers)
        assert r.status_code == 200, r.text
        assert await status_of(sessionmaker, someone) == "approved"


class TestReviewOwnCheckin:
    async def test_own_id_gets_its_code_the_others_succeed(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, tree.e1))["id"]
        first, _ = await in_state(client, db, tree, "pending")
        second, _ = await in_state(client, db, tree, "pending", org="b1")
        unknown = str(uuid.uuid4())

        r = await client.post(
            "/checkins/review",
            json={"ids": [first, own, second, unknown], "decision": "approve"},
            headers={**headers, "Accept-Language": "en"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": first, "ok": True, "status": "approved", "code": None},
            {"id": own, "ok": False, "status": "pending", "code": "review_own_forbidden"},
            {"id": second, "ok": True, "status": "approved", "code": None},
            {"id": unknown, "ok": False, "status": None, "code": "not_found"},
        ]
        assert await status_of(sessionmaker, own) == "pending"
        assert await status_of(sessionmaker, first) == "approved"
        assert await status_of(sessionmaker, second) == "approved"
        decided = AuditLog.action == "checkin.approved"
        assert await count(sessionmaker, AuditLog, decided, AuditLog.object_id == own) == 0
        assert await count(sessionmaker, OutboxEvent, OutboxEvent.topic == "checkin.approved") == 2

    async def test_reject_batch_of_only_own(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await officer_of_r1(db, tree)
        own = (await submit(client, headers, tree.r1))["id"]
        before = await written(sessionmaker)
        r = await client.post(
            "/checkins/review",
            json={"ids": [own], "decision": "reject", "comment": "不符合条件"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": own, "ok": False, "status": "pending", "code": "review_own_forbidden"}
        ]
        assert await written(sessionmaker) == before


class TestTheUpdateItself:
    async def test_conditional_update_matches_nothing_for_the_owner(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """No Python pre-check to race past: the UPDATE's own WHERE refuses the owner, even
        with a scope that covers everything."""
        officer, headers = await officer_of_r1(db, tree)
        own = uuid.UUID((await submit(client, headers, tree.r1))["id"])
        async with sessionmaker() as session, session.begin():
            changed = await review.transition(
                session,
                CHECKINS,
                [own],
                from_state=CheckinStatus.pending,
                to_state=CheckinStatus.approved,
                where=CHECKINS.decidable_by(officer.id, EVERYTHING),
                values={CHECKINS.decided_by: officer.id, CHECKINS.decided_at: clock.now()},
            )
        assert changed == []
        assert await status_of(sessionmaker, str(own)) == "pending"
