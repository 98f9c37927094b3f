"""The daily cap and the overlap rule under concurrent requests, on real PostgreSQL: approvals
of one member's records of one day, check-ins to overlapping activities, and a credit racing
an approval, all at once.  Never more than 24 approved hours a day, never the same time
credited twice, and no 500."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.clock import LOCAL_TZ
from app.models.activity import ActivityCredit
from app.models.auth import UserSession
from app.models.contribution import Contribution
from app.models.user import User
from tests.activities.conftest import FakeClock, Headers, World, create_activity, many_members
from tests.fixtures.orgs import Tree

pytestmark = [pytest.mark.committing, pytest.mark.postgres_only]

CENTRE = {"lat": 29.8683, "lng": 121.5440, "accuracy_m": 10}
MEMBERS = 6


def _local(day: date, hour: float) -> datetime:
    return datetime.combine(day, time(), tzinfo=LOCAL_TZ) + timedelta(hours=hour)


@pytest.fixture
def day(fake_clock: FakeClock) -> date:
    today = fake_clock().astimezone(LOCAL_TZ).date()
    fake_clock.set(_local(today, 12))
    return today + timedelta(days=1)


async def _people(db: AsyncSession, world: World) -> list[tuple[User, Headers]]:
    people = await many_members(db, world.host, MEMBERS)
    await db.execute(update(UserSession).values(expires_at=clock.now() + timedelta(days=7)))
    await db.commit()
    return people


async def _activity(
    client: httpx.AsyncClient, world: World, starts: datetime, ends: datetime, hours: float
) -> dict[str, Any]:
    return await create_activity(
        client,
        world,
        starts_at=starts.isoformat(),
        ends_at=ends.isoformat(),
        service_hours=hours,
        capacity=None,
    )


async def _sign_up(client: httpx.AsyncClient, activity: dict[str, Any], headers: Headers) -> None:
    r = await client.post(f"/activities/{activity['id']}/signup", headers=headers)
    assert r.status_code == 201, r.text


def _check_in(client: httpx.AsyncClient, activity: dict[str, Any], headers: Headers) -> Any:
    return client.post(f"/activities/{activity['id']}/attendance", json=CENTRE, headers=headers)


async def _submit(
    client: httpx.AsyncClient, world: World, headers: Headers, day: date, hours: float
) -> str:
    r = await client.post(
        "/contributions",
        json={
            "post": "community",
            "category": "volunteering",
            "title": "社区值守",
            "occurred_on": day.isoformat(),
            "hours": hours,
            "org_id": str(world.host.id),
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    record_id: str = r.json()["id"]
    return record_id


async def _approved_hours(db: AsyncSession, user: User, day: date) -> float:
    manual = await db.scalar(
        select(func.coalesce(func.sum(Contribution.half_hours), 0)).where(
            Contribution.user_id == user.id,
            Contribution.occurred_on == day,
            Contribution.status == "approved",
        )
    )
    credited = await db.scalar(
        select(func.coalesce(func.sum(ActivityCredit.hours), 0)).where(
            ActivityCredit.user_id == user.id,
            ActivityCredit.occurred_on == day,
            ActivityCredit.status == "approved",
        )
    )
    return float(manual or 0) / 2 + float(credited or 0)


async def _two_records_and_a_credit_each(
    client: httpx.AsyncClient,
    db: AsyncSession,
    world: World,
    fake_clock: FakeClock,
    day: date,
) -> tuple[list[tuple[User, Headers]], list[tuple[str, str]]]:
    """Each member: two pending 12-hour records (24 h: allowed when logged), then an 8-hour
    credit the same day."""
    people = await _people(db, world)
    activity = await _activity(client, world, _local(day, 10), _local(day, 18), 8)
    for _, headers in people:
        await _sign_up(client, activity, headers)
    fake_clock.set(_local(day, 9))
    pairs = []
    for _, headers in people:
        pairs.append(
            (
                await _submit(client, world, headers, day, 12),
                await _submit(client, world, headers, day, 12),
            )
        )
    fake_clock.set(_local(day, 10))
    for _, headers in people:
        r = await _check_in(client, activity, headers)
        assert r.json()["credited_hours"] == 8
    return people, pairs


class TestConcurrentHours:
    async def test_concurrent_approvals_cannot_pass_the_cap(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
        day: date,
    ) -> None:
        """Each member: two pending 12-hour records and an 8-hour credit; both records
        approved at the same moment by two officers.  One passes, one is refused."""
        people, pairs = await _two_records_and_a_credit_each(client, db, world, fake_clock, day)
        answers = await asyncio.gather(
            *(
                client.post(f"/contributions/{record}/approve", json={}, headers=officer)
                for first, second in pairs
                for record, officer in ((first, world.officer_headers), (second, tree.h_s1))
            )
        )
        codes = [(r.status_code, r.json().get("code")) for r in answers]
        for i in range(MEMBERS):
            assert sorted(codes[2 * i : 2 * i + 2], key=str) == [
                (200, None),
                (422, "daily_hours_exceeded"),
            ], codes
        for user, _ in people:
            assert await _approved_hours(db, user, day) == 20

    async def test_concurrent_batches_cannot_pass_the_cap(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
        day: date,
    ) -> None:
        """Two officers each approve a batch holding one of every member's two records."""
        people, pairs = await _two_records_and_a_credit_each(client, db, world, fake_clock, day)
        answers = await asyncio.gather(
            client.post(
                "/contributions/review",
                json={"ids": [f for f, _ in pairs], "decision": "approve"},
                headers=world.officer_headers,
            ),
            client.post(
                "/contributions/review",
                json={"ids": [s for _, s in pairs], "decision": "approve"},
                headers=tree.h_s1,
            ),
        )
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        firsts, seconds = (r.json()["results"] for r in answers)
        for first, second in zip(firsts, seconds, strict=True):
            assert sorted([first["code"], second["code"]], key=str) == [
                None,
                "daily_hours_exceeded",
            ], (first, second)
        for user, _ in people:
            assert await _approved_hours(db, user, day) == 20

    async def test_concurrent_check_ins_to_overlapping_activities_credit_the_time_once(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        day: date,
    ) -> None:
        people = await _people(db, world)
        a = await _activity(client, world, _local(day, 6), _local(day, 22), 16)
        b = await _activity(client, world, _local(day, 6), _local(day, 22), 16)
        for _, headers in people:
            await _sign_up(client, a, headers)
            await _sign_up(client, b, headers)
        fake_clock.set(_local(day, 6))
        answers = await asyncio.gather(
            *(_check_in(client, act, headers) for _, headers in people for act in (a, b))
        )
        assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
        for i, (user, _) in enumerate(people):
            credited = sorted(r.json()["credited_hours"] for r in answers[2 * i : 2 * i + 2])
            assert credited == [0, 16]
            assert await _approved_hours(db, user, day) == 16

    async def test_a_credit_racing_an_approval_never_passes_the_cap(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        day: date,
    ) -> None:
        """Approved 8 h and pending 12 h; an 8-hour check-in and the approval at once: either
        the approval first (20, then a 4-hour credit) or the credit first (16, the approval
        refused).  Never 28."""
        people = await _people(db, world)
        activity = await _activity(client, world, _local(day, 10), _local(day, 18), 8)
        for _, headers in people:
            await _sign_up(client, activity, headers)
        fake_clock.set(_local(day, 9))
        pending = []
        for _, headers in people:
            approved = await _submit(client, world, headers, day, 8)
            r = await client.post(
                f"/contributions/{approved}/approve", json={}, headers=world.officer_headers
            )
            assert r.status_code == 200
            pending.append(await _submit(client, world, headers, day, 12))
        fake_clock.set(_local(day, 10))
        answers = await asyncio.gather(
            *(
                request
                for (_, headers), record in zip(people, pending, strict=True)
                for request in (
                    _check_in(client, activity, headers),
                    client.post(
                        f"/contributions/{record}/approve", json={}, headers=world.officer_headers
                    ),
                )
            )
        )
        for i, (user, _) in enumerate(people):
            check_in, approval = answers[2 * i], answers[2 * i + 1]
            assert check_in.status_code == 201, check_in.text
            credited = check_in.json()["credited_hours"]
            if approval.status_code == 200:
                assert credited == 4
                assert await _approved_hours(db, user, day) == 24
            else:
                assert approval.json()["code"] == "daily_hours_exceeded"
                assert credited == 8
                assert await _approved_hours(db, user, day) == 16
