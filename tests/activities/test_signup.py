"""Signing up and cancelling, the waitlist, my sign-ups and the officers' roster."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.activity import Signup
from tests.activities.conftest import (
    FakeClock,
    Headers,
    World,
    accept_co_host,
    count_signups,
    create_activity,
    events,
    member_of,
)


async def _sign_up(client: httpx.AsyncClient, activity_id: str, headers: Headers) -> httpx.Response:
    return await client.post(f"/activities/{activity_id}/signup", headers=headers)


class TestSignup:
    async def test_confirmed_then_waitlisted_in_order(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=2)
        answers = []
        for _ in range(5):
            _, h = await member_of(db, world.host)
            r = await _sign_up(client, a["id"], h)
            assert r.status_code == 201, r.text
            answers.append(r.json())
        assert [x["status"] for x in answers] == ["confirmed"] * 2 + ["waitlisted"] * 3
        assert [x["waitlist_position"] for x in answers] == [None, None, 1, 2, 3]
        assert all(x["activity_id"] == a["id"] for x in answers)
        got = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
        assert got.json()["confirmed_count"] == 2
        assert got.json()["waitlist_count"] == 3

    async def test_unlimited_capacity_never_waitlists(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=None)
        for _ in range(3):
            _, h = await member_of(db, world.host)
            assert (await _sign_up(client, a["id"], h)).json()["status"] == "confirmed"

    async def test_twice_is_already_signed_up(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        _, h = await member_of(db, world.host)
        assert (await _sign_up(client, a["id"], h)).status_code == 201
        r = await _sign_up(client, a["id"], h)
        assert r.status_code == 409
        assert r.json()["code"] == "already_signed_up"
        assert await count_signups(db, a["id"], "confirmed") == 1
        got = await client.get(f"/activities/{a['id']}", headers=h)
        assert got.json()["confirmed_count"] == 1
        assert got.json()["waitlist_count"] == 0

    async def test_after_the_deadline_is_closed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        deadline = fake_clock() + timedelta(hours=1)
        a = await create_activity(client, world, signup_deadline=deadline.isoformat())
        _, h = await member_of(db, world.host)
        fake_clock.set(deadline)
        r = await _sign_up(client, a["id"], h)
        assert r.status_code == 409
        assert r.json()["code"] == "signup_closed"
        assert await count_signups(db, a["id"], "confirmed") == 0

    async def test_after_the_start_is_closed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        _, h = await member_of(db, world.host)
        fake_clock.advance(hours=2)
        r = await _sign_up(client, a["id"], h)
        assert r.status_code == 409
        assert r.json()["code"] == "signup_closed"

    async def test_cancelled_activity_is_closed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world)
        await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": "x"}, headers=world.officer_headers
        )
        _, h = await member_of(db, world.host)
        r = await _sign_up(client, a["id"], h)
        assert r.status_code == 409
        assert r.json()["code"] == "signup_closed"

    async def test_draft_and_unknown_are_404(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, publish=False)
        _, h = await member_of(db, world.host)
        assert (await _sign_up(client, a["id"], h)).status_code == 404
        assert (await _sign_up(client, str(uuid.uuid4()), h)).status_code == 404

    async def test_not_registered_with_the_host(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        org_only = await create_activity(client, world, visibility="org")
        region = await create_activity(client, world, visibility="region")
        _, outsider = await member_of(db, world.outside)
        _, pending = await member_of(db, world.host, status="pending")
        for activity in (org_only, region):
            for headers in (outsider, pending):
                r = await _sign_up(client, activity["id"], headers)
                assert r.status_code == 403
                assert r.json()["code"] == "not_registered"
        _, street = await member_of(db, world.street)
        assert (await _sign_up(client, region["id"], street)).status_code == 201
        assert (await _sign_up(client, org_only["id"], street)).status_code == 403
        public = await create_activity(client, world, visibility="public")
        assert (await _sign_up(client, public["id"], outsider)).status_code == 201

    async def test_co_host_members_may_sign_up(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, co_host_org_ids=[str(world.cohost.id)])
        await accept_co_host(client, world, a["id"])
        _, h = await member_of(db, world.cohost)
        assert (await _sign_up(client, a["id"], h)).status_code == 201

    async def test_sign_up_again_after_cancelling(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        _, h = await member_of(db, world.host)
        await _sign_up(client, a["id"], h)
        assert (await client.delete(f"/activities/{a['id']}/signup", headers=h)).status_code == 204
        r = await _sign_up(client, a["id"], h)
        assert r.status_code == 201
        assert r.json()["status"] == "confirmed"

    async def test_city_client_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        from tests.fixtures.factories import make_client

        a = await create_activity(client, world, visibility="public")
        _, headers = await make_client(db)
        r = await _sign_up(client, a["id"], headers)
        assert r.status_code == 403
        assert r.json()["code"] == "members_only"

    async def test_idempotency_key_replays_the_first_answer(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        _, h = await member_of(db, world.host)
        keyed = h | {"Idempotency-Key": "signup-1", "Content-Type": "application/json"}
        first = await client.post(f"/activities/{a['id']}/signup", headers=keyed, content=b"")
        again = await client.post(f"/activities/{a['id']}/signup", headers=keyed, content=b"")
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await count_signups(db, a["id"], "confirmed") == 1


class TestSignupCancel:
    async def test_cancelling_promotes_the_first_waitlisted(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        members = [await member_of(db, world.host) for _ in range(3)]
        answers = [(await _sign_up(client, a["id"], h)).json() for _, h in members]
        r = await client.delete(f"/activities/{a['id']}/signup", headers=members[0][1])
        assert r.status_code == 204
        statuses = {
            row.id: row.status
            for row in (
                await db.execute(
                    select(Signup.id, Signup.status).where(Signup.activity_id == uuid.UUID(a["id"]))
                )
            ).all()
        }
        assert statuses[uuid.UUID(answers[0]["id"])] == "cancelled"
        assert statuses[uuid.UUID(answers[1]["id"])] == "confirmed"
        assert statuses[uuid.UUID(answers[2]["id"])] == "waitlisted"
        promoted = await events(db, "activity.signup.promoted")
        assert [(e["signup_id"], e["reason"]) for e in promoted] == [
            (answers[1]["id"], "seat_freed")
        ]
        cancelled = await events(db, "activity.signup.cancelled")
        assert [(e["signup_id"], e["reason"]) for e in cancelled] == [(answers[0]["id"], "member")]
        third = await client.get(f"/activities/{a['id']}", headers=members[2][1])
        assert third.json()["my_signup"]["waitlist_position"] == 1
        assert third.json()["confirmed_count"] == 1
        assert third.json()["waitlist_count"] == 1

    async def test_leaving_the_waitlist_moves_the_others_up(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        members = [await member_of(db, world.host) for _ in range(4)]
        for _, h in members:
            await _sign_up(client, a["id"], h)
        await client.delete(f"/activities/{a['id']}/signup", headers=members[1][1])
        last = await client.get(f"/activities/{a['id']}", headers=members[3][1])
        assert last.json()["my_signup"]["waitlist_position"] == 2
        assert last.json()["confirmed_count"] == 1
        assert last.json()["waitlist_count"] == 2
        assert await events(db, "activity.signup.promoted") == []

    async def test_without_a_signup_is_404(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world)
        _, h = await member_of(db, world.host)
        assert (await client.delete(f"/activities/{a['id']}/signup", headers=h)).status_code == 404
        assert (
            await client.delete(f"/activities/{uuid.uuid4()}/signup", headers=h)
        ).status_code == 404

    async def test_not_after_the_start(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        _, h = await member_of(db, world.host)
        await _sign_up(client, a["id"], h)
        fake_clock.advance(hours=2)
        r = await client.delete(f"/activities/{a['id']}/signup", headers=h)
        assert r.status_code == 409
        assert r.json()["code"] == "signup_closed"
        assert await count_signups(db, a["id"], "confirmed") == 1


class TestMySignups:
    async def test_own_signups_newest_first(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        first = await create_activity(client, world, capacity=1)
        second = await create_activity(client, world, capacity=1)
        _, other = await member_of(db, world.host)
        _, h = await member_of(db, world.host)
        await _sign_up(client, first["id"], h)
        await _sign_up(client, second["id"], other)
        fake_clock.advance(seconds=1)
        await _sign_up(client, second["id"], h)
        r = await client.get("/me/signups", headers=h)
        assert r.status_code == 200
        items = r.json()["items"]
        assert [i["activity"]["id"] for i in items] == [second["id"], first["id"]]
        assert items[0]["status"] == "waitlisted"
        assert items[0]["waitlist_position"] == 1
        assert items[1]["status"] == "confirmed"
        assert items[1]["activity"]["title"] == first["title"]
        assert items[1]["attendance_status"] is None
        r = await client.get("/me/signups", headers=h, params={"status": "confirmed"})
        assert [i["activity"]["id"] for i in r.json()["items"]] == [first["id"]]
        r = await client.get("/me/signups", headers=h, params={"limit": 1})
        page2 = await client.get(
            "/me/signups", headers=h, params={"limit": 1, "cursor": r.json()["next_cursor"]}
        )
        assert [i["activity"]["id"] for i in page2.json()["items"]] == [first["id"]]
        assert page2.json()["next_cursor"] is None

    async def test_bad_status_is_422(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        _, h = await member_of(db, world.host)
        r = await client.get("/me/signups", headers=h, params={"status": "maybe"})
        assert r.status_code == 422


class TestRoster:
    async def _setup(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> tuple[dict[str, Any], list[Headers]]:
        a = await create_activity(client, world, capacity=1)
        members = [await member_of(db, world.host) for _ in range(2)]
        for _, h in members:
            await _sign_up(client, a["id"], h)
        return a, [h for _, h in members]

    async def test_officer_sees_the_roster(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a, _ = await self._setup(client, db, world)
        r = await client.get(f"/activities/{a['id']}/signups", headers=world.officer_headers)
        assert r.status_code == 200
        items = r.json()["items"]
        assert {i["status"] for i in items} == {"confirmed", "waitlisted"}
        waitlisted = next(i for i in items if i["status"] == "waitlisted")
        assert waitlisted["waitlist_position"] == 1
        assert waitlisted["name"] == "党员"
        assert waitlisted["phone_masked"].count("*") == 4
        assert all(i["attendance"] is None for i in items)
        r = await client.get(
            f"/activities/{a['id']}/signups",
            headers=world.officer_headers,
            params={"status": "waitlisted"},
        )
        assert len(r.json()["items"]) == 1

    async def test_officer_of_another_subtree_cannot_see_it(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a, members = await self._setup(client, db, world)
        r = await client.get(f"/activities/{a['id']}/signups", headers=world.outsider_headers)
        assert r.status_code == 403
        r = await client.get(f"/activities/{a['id']}/signups", headers=members[0])
        assert r.status_code == 403
        r = await client.get(f"/activities/{uuid.uuid4()}/signups", headers=world.officer_headers)
        assert r.status_code == 404
