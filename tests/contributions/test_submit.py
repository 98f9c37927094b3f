"""Logging a contribution: the categories, the rules on hours, dates and organizations, the
daily limit with activity credits, and what is written."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import get_settings
from app.models.contribution import Contribution
from app.models.kit import AuditLog, OutboxEvent
from tests.contributions.helpers import (
    World,
    body,
    count,
    create,
    make_credit,
    make_member,
    today,
    written,
)
from tests.fixtures.problems import assert_problem


class TestContributionCategoriesList:
    async def test_both_posts_with_chinese_and_english_names(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        r = await client.get("/contribution-categories", headers=world.alice.headers)
        assert r.status_code == 200, r.text
        posts = {p["post"]: p for p in r.json()["posts"]}
        assert set(posts) == {"enterprise", "community"}
        assert posts["enterprise"]["name"] == "企业职责岗"
        safety = next(c for c in posts["enterprise"]["categories"] if c["code"] == "safety")
        assert safety == {
            "code": "safety",
            "name": "安全生产",
            "name_zh": "安全生产",
            "name_en": "Workplace safety",
        }
        r = await client.get(
            "/contribution-categories",
            headers={**world.alice.headers, "Accept-Language": "en"},
        )
        community = next(p for p in r.json()["posts"] if p["post"] == "community")
        assert community["name"] == "Social service post"
        assert "elder_care" in [c["code"] for c in community["categories"]]

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/contribution-categories")
        assert r.status_code == 401


class TestContributionsCreate:
    async def test_pending_record_with_audit_and_event(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        r = await client.post(
            "/contributions", json=body(world.tree.r1, hours=2.5), headers=world.alice.headers
        )
        assert r.status_code == 201, r.text
        data = r.json()
        assert r.headers["location"].endswith(f"/contributions/{data['id']}")
        assert data["status"] == "pending"
        assert data["source"] == "manual"
        assert data["hours"] == 2.5
        assert data["org"] == {"id": str(world.tree.r1.id), "name": world.tree.r1.name}
        assert data["attachment_count"] == 0
        async with sessionmaker() as s:
            row = await s.get(Contribution, uuid.UUID(data["id"]))
            assert row is not None
            assert row.half_hours == 5
            assert row.user_id == world.alice.user.id
            assert row.possible_duplicate is False
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.object_id == data["id"]))
            ).scalar_one()
            event = (
                await s.execute(select(OutboxEvent).where(OutboxEvent.aggregate_id == data["id"]))
            ).scalar_one()
        assert (entry.action, entry.to_state, entry.actor_id) == (
            "contribution.submitted",
            "pending",
            world.alice.user.id,
        )
        assert event.topic == "contribution.submitted"
        assert event.payload["to_state"] == "pending"
        assert "王小丽" not in str(event.payload)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("hours", 0),
            ("hours", -1),
            ("hours", 0.3),
            ("hours", 1.25),
            ("hours", 24.5),
            ("hours", "两小时"),
            ("post", "factory"),
            ("category", "volunteering-x"),
            ("title", ""),
            ("occurred_on", "2026-02-30"),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        field: str,
        value: object,
    ) -> None:
        before = await written(sessionmaker)
        r = await client.post(
            "/contributions",
            json=body(world.tree.r1, **{field: value}),
            headers=world.alice.headers,
        )
        problem = assert_problem(r, 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == [field]
        assert await written(sessionmaker) == before

    async def test_category_must_belong_to_the_post(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        r = await client.post(
            "/contributions",
            json=body(world.tree.r1, post="enterprise", category="elder_care"),
            headers=world.alice.headers,
        )
        assert assert_problem(r, 422, "validation_error")["errors"][0]["field"] == "category"
        await create(client, world.alice, world.tree.r1, post="enterprise", category="mentoring")

    async def test_half_hours_and_24_are_fine(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        assert (await create(client, world.alice, world.tree.r1, hours=0.5))["hours"] == 0.5
        day = (today() - timedelta(days=3)).isoformat()
        assert (await create(client, world.alice, world.tree.r1, hours=24, occurred_on=day))[
            "hours"
        ] == 24

    async def test_not_in_the_future_not_older_than_the_limit(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        limit = get_settings().contribution_max_age_days
        before = await written(sessionmaker)
        for day in (today() + timedelta(days=1), today() - timedelta(days=limit + 1)):
            r = await client.post(
                "/contributions",
                json=body(world.tree.r1, occurred_on=day.isoformat()),
                headers=world.alice.headers,
            )
            problem = assert_problem(r, 422, "validation_error")
            assert problem["errors"][0]["field"] == "occurred_on"
        assert await written(sessionmaker) == before
        await create(client, world.alice, world.tree.r1, occurred_on=today().isoformat())
        oldest = (today() - timedelta(days=limit)).isoformat()
        await create(client, world.alice, world.tree.r1, occurred_on=oldest)

    async def test_org_must_be_one_that_approved_the_member(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        before = await written(sessionmaker)
        # r2 is a sibling where alice is not registered; e1 lies under r1 but is not hers.
        for org in (world.tree.r2, world.tree.e1):
            r = await client.post("/contributions", json=body(org), headers=world.alice.headers)
            problem = assert_problem(r, 422, "contribution_org_invalid")
            assert problem["errors"][0]["field"] == "org_id"
        r = await client.post(
            "/contributions",
            json=body(world.tree.r1, org_id=str(uuid.uuid4())),
            headers=world.alice.headers,
        )
        assert_problem(r, 422, "contribution_org_invalid")
        assert await written(sessionmaker) == before
        # A member whose record organization is e1, registered nowhere: the record
        # organization is the member's own statement and opens no queue.
        local = await make_member(db, None, record_org_id=world.tree.e1.id, record_org_name=None)
        r = await client.post("/contributions", json=body(world.tree.e1), headers=local.headers)
        assert_problem(r, 422, "contribution_org_invalid")
        assert await written(sessionmaker) == before

    async def test_a_record_org_named_on_me_opens_no_queue(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """The attack: a member approved in one district names an organization of another
        district as their record organization and files a contribution with it, to land in
        that organization's review queue.  Now: 422, and the queue stays empty."""
        tree = world.tree
        r = await client.patch(
            "/me", json={"record_org_id": str(tree.r2.id)}, headers=world.carol.headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["record_org_id"] == str(tree.r2.id)
        before = await written(sessionmaker)
        r = await client.post("/contributions", json=body(tree.r2), headers=world.carol.headers)
        problem = assert_problem(r, 422, "contribution_org_invalid")
        assert problem["errors"][0]["field"] == "org_id"
        assert await written(sessionmaker) == before
        # Nor by editing a record filed where she is approved.
        mine = await create(client, world.carol, tree.r3)
        r = await client.patch(
            f"/contributions/{mine['id']}",
            json={"org_id": str(tree.r2.id)},
            headers=world.carol.headers,
        )
        assert_problem(r, 422, "contribution_org_invalid")
        for headers in (tree.h_r2, tree.h_s1):
            r = await client.get(f"/orgs/{tree.r2.id}/contributions", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["items"] == []
        # Once r2 approves her check-in, r2's queue takes her records.
        r = await client.post(
            "/checkins", json={"org_id": str(tree.r2.id)}, headers=world.carol.headers
        )
        assert r.status_code == 201, r.text
        r = await client.post(f"/checkins/{r.json()['id']}/approve", headers=tree.h_r2)
        assert r.status_code == 200, r.text
        created = await create(client, world.carol, tree.r2)
        r = await client.get(f"/orgs/{tree.r2.id}/contributions", headers=tree.h_r2)
        assert [i["id"] for i in r.json()["items"]] == [created["id"]]

    async def test_a_member_who_left_files_no_more(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        r = await client.get("/me/checkins", headers=world.alice.headers)
        checkin = next(c for c in r.json()["items"] if c["org"]["id"] == str(world.tree.r1.id))
        r = await client.post(f"/checkins/{checkin['id']}/leave", headers=world.alice.headers)
        assert r.status_code == 200, r.text
        r = await client.post(
            "/contributions", json=body(world.tree.r1), headers=world.alice.headers
        )
        assert_problem(r, 422, "contribution_org_invalid")

    async def test_a_pending_checkin_is_not_enough(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        member = await make_member(db, None)
        r = await client.post(
            "/checkins", json={"org_id": str(world.tree.r2.id)}, headers=member.headers
        )
        assert r.status_code == 201, r.text
        r = await client.post("/contributions", json=body(world.tree.r2), headers=member.headers)
        assert_problem(r, 422, "contribution_org_invalid")


class TestDailyLimit:
    async def test_24_hours_a_day_across_records(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        await create(client, world.alice, world.tree.r1, hours=20)
        await create(client, world.alice, world.tree.r1, hours=3.5)
        before = await written(sessionmaker)
        r = await client.post(
            "/contributions", json=body(world.tree.r1, hours=1), headers=world.alice.headers
        )
        problem = assert_problem(r, 422, "daily_hours_exceeded")
        assert problem["errors"][0]["field"] == "hours"
        assert "0.5" in problem["errors"][0]["message"]
        assert await written(sessionmaker) == before
        await create(client, world.alice, world.tree.r1, hours=0.5)
        # Another day and another member are untouched.
        other_day = (today() - timedelta(days=2)).isoformat()
        await create(client, world.alice, world.tree.r1, hours=24, occurred_on=other_day)
        await create(client, world.bob, world.tree.e1, hours=24)

    async def test_activity_credits_count(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        day = today() - timedelta(days=1)
        await make_credit(db, world.alice, world.tree.r1, day=day, hours=8)
        r = await client.post(
            "/contributions", json=body(world.tree.r1, hours=16.5), headers=world.alice.headers
        )
        assert_problem(r, 422, "daily_hours_exceeded")
        created = await create(client, world.alice, world.tree.r1, hours=16)
        assert created["hours"] == 16

    @pytest.mark.parametrize("how", ["withdraw", "reject"])
    async def test_withdrawn_and_rejected_hours_are_free_again(
        self, client: httpx.AsyncClient, world: World, how: str
    ) -> None:
        first = await create(client, world.alice, world.tree.r1, hours=20)
        r = await client.post(
            "/contributions", json=body(world.tree.r1, hours=10), headers=world.alice.headers
        )
        assert_problem(r, 422, "daily_hours_exceeded")
        if how == "withdraw":
            r = await client.post(
                f"/contributions/{first['id']}/withdraw", headers=world.alice.headers
            )
        else:
            r = await client.post(
                f"/contributions/{first['id']}/reject",
                json={"reason": "重复"},
                headers=world.tree.h_r1,
            )
        assert r.status_code == 200, r.text
        await create(client, world.alice, world.tree.r1, hours=10)

    async def test_returned_hours_still_count(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        first = await create(client, world.alice, world.tree.r1, hours=20)
        r = await client.post(
            f"/contributions/{first['id']}/return",
            json={"reason": "请补充说明"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            "/contributions", json=body(world.tree.r1, hours=5), headers=world.alice.headers
        )
        assert_problem(r, 422, "daily_hours_exceeded")

    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_concurrent_submissions_never_pass_24(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        async def one() -> int:
            r = await client.post(
                "/contributions", json=body(world.tree.r1, hours=5), headers=world.alice.headers
            )
            return r.status_code

        codes = await asyncio.gather(*(one() for _ in range(12)))
        assert sorted(codes) == [201] * 4 + [422] * 8
        total = await count(sessionmaker, Contribution, Contribution.user_id == world.alice.user.id)
        assert total == 4
