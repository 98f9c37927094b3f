"""Capacity under concurrency, counted after: many members sign up at once, then many
confirmed members cancel at once.  Never more confirmed than the capacity, a waitlist in
arrival order, the first waitlisted promoted first, and no 500."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.activity import Activity, Signup
from tests.activities.conftest import World, create_activity, events, many_members

# Requests at once, each on a connection of its own.
pytestmark = pytest.mark.committing


async def _scenario(
    client: httpx.AsyncClient,
    db: AsyncSession,
    world: World,
    *,
    members: int,
    seats: int,
    cancellations: int,
) -> None:
    a = await create_activity(client, world, capacity=seats)
    people = await many_members(db, world.host, members)

    answers = await asyncio.gather(
        *(client.post(f"/activities/{a['id']}/signup", headers=h) for _, h in people)
    )
    assert sorted({r.status_code for r in answers}) == [201], [
        r.text for r in answers if r.status_code != 201
    ]
    bodies = [r.json() for r in answers]
    confirmed = [b for b in bodies if b["status"] == "confirmed"]
    waitlisted = sorted(
        (b for b in bodies if b["status"] == "waitlisted"), key=lambda b: b["waitlist_position"]
    )
    assert len(confirmed) == seats
    assert [b["waitlist_position"] for b in waitlisted] == list(range(1, members - seats + 1))

    activity_id = uuid.UUID(a["id"])
    rows = (
        await db.execute(
            select(Signup.id, Signup.user_id, Signup.status, Signup.waitlist_seq).where(
                Signup.activity_id == activity_id
            )
        )
    ).all()
    assert sum(r.status == "confirmed" for r in rows) == seats
    # Positions follow arrival order: the waitlist numbers, without gaps.
    seq_of = {str(r.id): r.waitlist_seq for r in rows}
    assert [seq_of[b["id"]] for b in waitlisted] == list(range(1, members - seats + 1))
    counters = (
        await db.execute(
            select(Activity.confirmed_count, Activity.waitlist_count).where(
                Activity.id == activity_id
            )
        )
    ).one()
    assert tuple(counters) == (seats, members - seats)

    # Confirmed members cancel, all at once.
    headers_of = {str(user.id): h for user, h in people}
    user_of = {str(r.id): str(r.user_id) for r in rows}
    leaving = confirmed[:cancellations]
    answers = await asyncio.gather(
        *(
            client.delete(f"/activities/{a['id']}/signup", headers=headers_of[user_of[b["id"]]])
            for b in leaving
        )
    )
    assert {r.status_code for r in answers} == {204}, [r.text for r in answers]

    db.expire_all()
    after = {
        str(r.id): r.status
        for r in (
            await db.execute(
                select(Signup.id, Signup.status).where(Signup.activity_id == activity_id)
            )
        ).all()
    }
    assert sum(s == "confirmed" for s in after.values()) == seats
    assert all(after[b["id"]] == "cancelled" for b in leaving)
    first = [b["id"] for b in waitlisted[:cancellations]]
    rest = [b["id"] for b in waitlisted[cancellations:]]
    assert all(after[i] == "confirmed" for i in first)
    assert all(after[i] == "waitlisted" for i in rest)
    # Promoted one by one, in waitlist order.
    promoted = [e["signup_id"] for e in await events(db, "activity.signup.promoted")]
    assert promoted == first
    counters = (
        await db.execute(
            select(Activity.confirmed_count, Activity.waitlist_count).where(
                Activity.id == activity_id
            )
        )
    ).one()
    assert tuple(counters) == (seats, members - seats - cancellations)
    # The rest of the waitlist moved up, still in arrival order (read through every page).
    positions: dict[str, int] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"status": "waitlisted", "limit": 40}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.get(
            f"/activities/{a['id']}/signups", headers=world.officer_headers, params=params
        )
        positions |= {i["signup_id"]: i["waitlist_position"] for i in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [positions[i] for i in rest] == list(range(1, len(rest) + 1))


class TestConcurrentSignups:
    @pytest.mark.parametrize(
        ("members", "seats", "cancellations"),
        [
            pytest.param(20, 5, 3, id="twenty_for_five_seats"),
            pytest.param(
                200, 50, 30, id="two_hundred_for_fifty_seats", marks=pytest.mark.postgres_only
            ),
        ],
    )
    async def test_many_for_few_seats(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        members: int,
        seats: int,
        cancellations: int,
    ) -> None:
        await _scenario(
            client, db, world, members=members, seats=seats, cancellations=cancellations
        )

    @pytest.mark.postgres_only
    async def test_same_member_many_times_at_once(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=5)
        ((_, h),) = await many_members(db, world.host, 1)
        answers = await asyncio.gather(
            *(client.post(f"/activities/{a['id']}/signup", headers=h) for _ in range(10))
        )
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [409] * 9
        assert {r.json()["code"] for r in answers if r.status_code == 409} == {"already_signed_up"}
        got = await client.get(f"/activities/{a['id']}", headers=h)
        assert got.json()["confirmed_count"] == 1


class TestMixedLoad:
    async def test_sign_ups_and_cancellations_at_once(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        """Cancellations free seats while new members arrive: the counters stay exact and
        nobody waits on the list while a seat is free."""
        seats = 8
        a = await create_activity(client, world, capacity=seats)
        people = await many_members(db, world.host, 40)
        early, late = people[:20], people[20:]
        first = await asyncio.gather(
            *(client.post(f"/activities/{a['id']}/signup", headers=h) for _, h in early)
        )
        leaving = [
            h for (_, h), r in zip(early, first, strict=True) if r.json()["status"] == "confirmed"
        ][:5]
        answers = await asyncio.gather(
            *(client.post(f"/activities/{a['id']}/signup", headers=h) for _, h in late),
            *(client.delete(f"/activities/{a['id']}/signup", headers=h) for h in leaving),
        )
        assert all(r.status_code in (201, 204) for r in answers), [r.text for r in answers]
        activity_id = uuid.UUID(a["id"])
        db.expire_all()
        statuses = list(
            (
                await db.execute(select(Signup.status).where(Signup.activity_id == activity_id))
            ).scalars()
        )
        confirmed = statuses.count("confirmed")
        waitlisted = statuses.count("waitlisted")
        assert confirmed == seats
        assert waitlisted == 40 - 5 - seats
        counters = (
            await db.execute(
                select(Activity.confirmed_count, Activity.waitlist_count).where(
                    Activity.id == activity_id
                )
            )
        ).one()
        assert tuple(counters) == (confirmed, waitlisted)
