"""Creating, editing, publishing, cancelling and completing activities."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.activity import Activity, activity_co_hosts
from app.models.kit import AuditLog
from tests.activities.conftest import (
    FakeClock,
    World,
    activity_body,
    count_signups,
    create_activity,
    events,
    member_of,
)


async def _activities(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(Activity))).scalar_one())


async def _audit_actions(db: AsyncSession, activity_id: str) -> list[str]:
    stmt = (
        select(AuditLog.action)
        .where(AuditLog.object_id == activity_id)
        .order_by(AuditLog.created_at, AuditLog.id)
    )
    return list((await db.execute(stmt)).scalars())


class TestCreate:
    async def test_officer_creates_a_draft(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        body = activity_body(world.host, co_host_org_ids=[str(world.cohost.id)])
        r = await client.post("/activities", json=body, headers=world.officer_headers)
        assert r.status_code == 201, r.text
        a = r.json()
        assert a["status"] == "draft"
        assert a["org_id"] == str(world.host.id)
        assert a["co_host_org_ids"] == [str(world.cohost.id)]
        assert a["location"]["radius_m"] == 200
        assert a["seats_left"] == 10
        assert a["waitlist_count"] == 0
        assert a["my_signup"] is None
        # The cohost lies outside the host officer's subtree: it is invited.
        assert a["co_hosts"] == [{"org_id": str(world.cohost.id), "status": "pending"}]
        assert sorted(await _audit_actions(db, a["id"])) == [
            "activity.co_host.invited",
            "activity.create",
        ]
        stored = await db.get(Activity, uuid.UUID(a["id"]))
        assert stored is not None
        assert stored.district_id == world.district.id

    async def test_officer_above_may_create_for_a_child(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        r = await client.post(
            "/activities", json=activity_body(world.child), headers=world.officer_headers
        )
        assert r.status_code == 201

    async def test_officer_of_another_subtree_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        r = await client.post(
            "/activities", json=activity_body(world.host), headers=world.outsider_headers
        )
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
        assert await _activities(db) == 0

    async def test_plain_member_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        _, headers = await member_of(db, world.host)
        r = await client.post("/activities", json=activity_body(world.host), headers=headers)
        assert r.status_code == 403

    async def test_anonymous_gets_401(self, client: httpx.AsyncClient, world: World) -> None:
        r = await client.post("/activities", json=activity_body(world.host))
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"capacity": 0}, "capacity"),
            ({"location": {"name": "x", "lat": 91, "lng": 121.5}}, "location.lat"),
            ({"location": {"name": "x", "lat": 29.8, "lng": -181}}, "location.lng"),
            ({"location": {"name": "x", "lat": 29.8, "lng": 121.5, "radius_m": 49}}, None),
            ({"location": {"name": "x", "lat": 29.8, "lng": 121.5, "radius_m": 5001}}, None),
            ({"service_hours": 1.3}, "service_hours"),
            ({"service_hours": -0.5}, "service_hours"),
            ({"post": "family"}, "post"),
            ({"visibility": "secret"}, "visibility"),
            ({"category": "party"}, "category"),
            ({"title": ""}, "title"),
            ({"starts_at": "2026-12-01T09:00:00"}, "starts_at"),  # no offset
            ({"unknown": 1}, "unknown"),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        overrides: dict[str, Any],
        field: str | None,
    ) -> None:
        body = activity_body(world.host, **overrides)
        r = await client.post("/activities", json=body, headers=world.officer_headers)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert problem["code"] == "validation_error"
        fields = [e["field"] for e in problem["errors"]]
        assert (field or "location.radius_m") in fields
        assert await _activities(db) == 0

    @pytest.mark.parametrize(
        ("rule", "field"),
        [
            ("end_at_start", "ends_at"),
            ("deadline_after_start", "signup_deadline"),
            ("unknown_co_host", "co_host_org_ids"),
            ("host_as_co_host", "co_host_org_ids"),
            ("unknown_host", "org_id"),
        ],
    )
    async def test_rules_beyond_the_schema_are_422_and_write_nothing(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, rule: str, field: str
    ) -> None:
        body = activity_body(world.host)
        if rule == "end_at_start":
            body["ends_at"] = body["starts_at"]
        elif rule == "deadline_after_start":
            body["signup_deadline"] = body["ends_at"]
        elif rule == "unknown_co_host":
            body["co_host_org_ids"] = [str(uuid.uuid4())]
        elif rule == "host_as_co_host":
            body["co_host_org_ids"] = [str(world.host.id)]
        else:
            body["org_id"] = str(uuid.uuid4())
        r = await client.post("/activities", json=body, headers=world.officer_headers)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == field
        assert await _activities(db) == 0

    async def test_unlimited_capacity_and_english_errors(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        r = await client.post(
            "/activities",
            json=activity_body(world.host, capacity=None),
            headers=world.officer_headers,
        )
        assert r.status_code == 201
        assert r.json()["capacity"] is None
        assert r.json()["seats_left"] is None
        bad = activity_body(world.host, co_host_org_ids=[str(world.host.id)])
        r = await client.post(
            "/activities", json=bad, headers=world.officer_headers | {"Accept-Language": "en"}
        )
        assert r.json()["title"] == "The request is not valid"
        assert r.json()["errors"][0]["message"] == "co_host_org_ids must not include the host"


class TestUpdate:
    async def test_officer_edits(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.patch(
            f"/activities/{a['id']}",
            json={
                "title": "新标题",
                "co_host_org_ids": [str(world.cohost.id)],
                "location": {"name": "楼宇党群服务站", "lat": 29.9, "lng": 121.6, "radius_m": 500},
                "signup_deadline": None,
            },
            headers=world.officer_headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "新标题"
        assert r.json()["co_host_org_ids"] == [str(world.cohost.id)]
        assert r.json()["location"]["radius_m"] == 500
        r = await client.patch(
            f"/activities/{a['id']}", json={"co_host_org_ids": []}, headers=world.officer_headers
        )
        assert r.json()["co_host_org_ids"] == []
        rows = await db.execute(select(func.count()).select_from(activity_co_hosts))
        assert rows.scalar_one() == 0

    async def test_end_before_start_after_merge_is_422(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.patch(
            f"/activities/{a['id']}",
            json={"title": "不应保存", "ends_at": a["starts_at"]},
            headers=world.officer_headers,
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "ends_at"
        got = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
        assert got.json()["title"] == a["title"]

    @pytest.mark.parametrize("field", ["title", "starts_at", "post", "location"])
    async def test_null_for_a_required_field_is_422(
        self, client: httpx.AsyncClient, world: World, field: str
    ) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.patch(
            f"/activities/{a['id']}", json={field: None}, headers=world.officer_headers
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == field

    async def test_org_cannot_be_changed(self, client: httpx.AsyncClient, world: World) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.patch(
            f"/activities/{a['id']}",
            json={"org_id": str(world.outside.id)},
            headers=world.officer_headers,
        )
        assert r.status_code == 422

    async def test_completed_cannot_be_edited(
        self, client: httpx.AsyncClient, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        fake_clock.advance(hours=3)
        r = await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        assert r.status_code == 200
        r = await client.patch(
            f"/activities/{a['id']}", json={"title": "x"}, headers=world.officer_headers
        )
        assert r.status_code == 409
        assert r.json()["code"] == "invalid_transition"

    async def test_capacity_below_confirmed_is_409(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=3)
        for _ in range(2):
            _, h = await member_of(db, world.host)
            assert (
                await client.post(f"/activities/{a['id']}/signup", headers=h)
            ).status_code == 201
        r = await client.patch(
            f"/activities/{a['id']}", json={"capacity": 1}, headers=world.officer_headers
        )
        assert r.status_code == 409
        assert r.json()["code"] == "capacity_below_confirmed"
        r = await client.patch(
            f"/activities/{a['id']}", json={"capacity": 2}, headers=world.officer_headers
        )
        assert r.status_code == 200
        assert r.json()["seats_left"] == 0

    async def test_raising_capacity_promotes_as_many_as_fit(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        signups = []
        for _ in range(5):
            _, h = await member_of(db, world.host)
            r = await client.post(f"/activities/{a['id']}/signup", headers=h)
            signups.append(r.json())
        assert [s["status"] for s in signups] == ["confirmed"] + ["waitlisted"] * 4
        r = await client.patch(
            f"/activities/{a['id']}", json={"capacity": 3}, headers=world.officer_headers
        )
        assert r.status_code == 200
        assert r.json()["confirmed_count"] == 3
        assert r.json()["waitlist_count"] == 2
        assert r.json()["seats_left"] == 0
        promoted = await events(db, "activity.signup.promoted")
        assert [e["signup_id"] for e in promoted] == [signups[1]["id"], signups[2]["id"]]
        assert {e["reason"] for e in promoted} == {"capacity_raised"}
        # No limit at all: everyone left is promoted.
        r = await client.patch(
            f"/activities/{a['id']}", json={"capacity": None}, headers=world.officer_headers
        )
        assert r.json()["confirmed_count"] == 5
        assert r.json()["waitlist_count"] == 0
        assert r.json()["seats_left"] is None
        assert await count_signups(db, a["id"], "confirmed") == 5


class TestPublish:
    async def test_draft_is_published(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.post(f"/activities/{a['id']}/publish", headers=world.officer_headers)
        assert r.status_code == 200
        assert r.json()["status"] == "published"
        assert r.json()["published_at"] is not None
        assert await _audit_actions(db, a["id"]) == ["activity.create", "activity.published"]
        assert [e["activity_id"] for e in await events(db, "activity.published")] == [a["id"]]

    async def test_twice_is_invalid_transition(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        a = await create_activity(client, world)
        r = await client.post(f"/activities/{a['id']}/publish", headers=world.officer_headers)
        assert r.status_code == 409
        assert r.json()["code"] == "invalid_transition"

    async def test_after_the_start_is_refused(
        self, client: httpx.AsyncClient, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world, publish=False)
        fake_clock.advance(hours=2)
        r = await client.post(f"/activities/{a['id']}/publish", headers=world.officer_headers)
        assert r.status_code == 409
        assert r.json()["code"] == "activity_started"

    async def test_unknown_activity_is_404(self, client: httpx.AsyncClient, world: World) -> None:
        r = await client.post(f"/activities/{uuid.uuid4()}/publish", headers=world.officer_headers)
        assert r.status_code == 404


class TestCancel:
    async def test_cancels_every_signup(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        for _ in range(3):
            _, h = await member_of(db, world.host)
            await client.post(f"/activities/{a['id']}/signup", headers=h)
        r = await client.post(
            f"/activities/{a['id']}/cancel",
            json={"reason": "台风预警"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "cancelled"
        assert body["cancel_reason"] == "台风预警"
        assert body["confirmed_count"] == 0
        assert body["waitlist_count"] == 0
        assert await count_signups(db, a["id"], "cancelled") == 3
        cancelled = await events(db, "activity.signup.cancelled")
        assert len(cancelled) == 3
        assert {e["reason"] for e in cancelled} == {"activity_cancelled"}
        assert len(await events(db, "activity.cancelled")) == 1
        assert (await _audit_actions(db, a["id"]))[-1] == "activity.cancelled"

    async def test_reason_is_required(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world)
        r = await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": " "}, headers=world.officer_headers
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "reason"
        got = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
        assert got.json()["status"] == "published"

    async def test_completed_cannot_be_cancelled(
        self, client: httpx.AsyncClient, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        fake_clock.advance(hours=5)
        await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        r = await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": "x"}, headers=world.officer_headers
        )
        assert r.status_code == 409
        assert r.json()["code"] == "invalid_transition"

    async def test_draft_can_be_cancelled(self, client: httpx.AsyncClient, world: World) -> None:
        a = await create_activity(client, world, publish=False)
        r = await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": "x"}, headers=world.officer_headers
        )
        assert r.status_code == 200
        r = await client.post(f"/activities/{a['id']}/publish", headers=world.officer_headers)
        assert r.status_code == 409


class TestComplete:
    async def test_not_before_the_start(
        self, client: httpx.AsyncClient, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        r = await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        assert r.status_code == 409
        assert r.json()["code"] == "activity_not_started"
        fake_clock.advance(hours=2, seconds=1)
        r = await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        assert r.status_code == 200
        assert r.json()["status"] == "completed"
        assert r.json()["completed_at"] is not None

    async def test_draft_cannot_be_completed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world, publish=False)
        fake_clock.advance(hours=3)
        r = await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        assert r.status_code == 409
        assert r.json()["code"] == "invalid_transition"


class TestOnlyTheHostsOfficersRunIt:
    @pytest.mark.parametrize(
        ("method", "act", "body", "hours"),
        [
            pytest.param("PATCH", "", {"title": "x"}, 0, id="update"),
            pytest.param("POST", "/publish", None, 0, id="publish"),
            pytest.param("POST", "/cancel", {"reason": "x"}, 0, id="cancel"),
            pytest.param("POST", "/complete", None, 3, id="complete"),  # once started
        ],
    )
    async def test_others_get_404_for_a_draft_and_403_otherwise(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        method: str,
        act: str,
        body: dict[str, Any] | None,
        hours: int,
    ) -> None:
        draft = await create_activity(client, world, publish=False)
        published = await create_activity(client, world)
        _, member = await member_of(db, world.host)
        fake_clock.advance(hours=hours)
        for headers in (world.outsider_headers, member):
            for a, expected in ((draft, 404), (published, 403)):
                r = await client.request(
                    method, f"/activities/{a['id']}{act}", json=body, headers=headers
                )
                assert r.status_code == expected, r.text
        # Nothing changed.
        for a, actions in (
            (draft, ["activity.create"]),
            (published, ["activity.create", "activity.published"]),
        ):
            got = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
            assert got.json()["status"] == a["status"]
            assert got.json()["title"] == a["title"]
            assert await _audit_actions(db, a["id"]) == actions
