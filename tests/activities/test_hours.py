"""Hours that cannot be gamed: overlapping activities credit the time actually covered, and a
member's approved hours of a day (Asia/Shanghai) never pass 24 across all sources — credits
are clipped to what is left of the day, approvals that would pass it are refused
(`daily_hours_exceeded`).

Each test is the attack that used to get through, and the answer now."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.hours import local_dates, uncovered_seconds
from app.core import clock
from app.core.clock import LOCAL_TZ
from app.models.activity import ActivityCredit
from app.models.auth import UserSession
from app.models.contribution import Contribution
from app.models.user import User
from tests.activities.conftest import FakeClock, Headers, World, create_activity, member_of
from tests.fixtures.orgs import Tree

CENTRE = {"lat": 29.8683, "lng": 121.5440, "accuracy_m": 10}


async def _member(db: AsyncSession, world: World) -> tuple[User, Headers]:
    """An approved member of the host; every session (officers' too) made to outlive the
    two days these tests move the clock over."""
    user, headers = await member_of(db, world.host)
    await db.execute(update(UserSession).values(expires_at=clock.now() + timedelta(days=7)))
    await db.commit()
    return user, headers


def _local(day: date, hour: float) -> datetime:
    return datetime.combine(day, time(), tzinfo=LOCAL_TZ) + timedelta(hours=hour)


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


async def _attend(
    client: httpx.AsyncClient,
    fake_clock: FakeClock,
    activity: dict[str, Any],
    headers: Headers,
) -> float:
    """Check in on site at the start (on time, inside the geofence); the hours credited."""
    fake_clock.set(datetime.fromisoformat(activity["starts_at"]) + timedelta(minutes=1))
    r = await client.post(f"/activities/{activity['id']}/attendance", json=CENTRE, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "present"
    credited: float = r.json()["credited_hours"]
    return credited


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


@pytest.fixture
def tomorrow(fake_clock: FakeClock) -> date:
    """Tomorrow's local date; the clock stands at noon today (activities are made ahead)."""
    today = fake_clock().astimezone(LOCAL_TZ).date()
    fake_clock.set(_local(today, 12))
    return today + timedelta(days=1)


class TestOverlap:
    async def test_two_activities_at_the_same_hours_credit_those_hours_once(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        """The attack: two 16-hour activities at the same time, 32 hours on one day."""
        user, member = await _member(db, world)
        a = await _activity(client, world, _local(tomorrow, 6), _local(tomorrow, 22), 16)
        b = await _activity(client, world, _local(tomorrow, 6), _local(tomorrow, 22), 16)
        await _sign_up(client, a, member)
        await _sign_up(client, b, member)
        assert await _attend(client, fake_clock, a, member) == 16
        assert await _attend(client, fake_clock, b, member) == 0
        assert await _approved_hours(db, user, tomorrow) == 16
        summary = await client.get("/me/contributions/summary", headers=member)
        assert sum(t["approved_hours"] for t in summary.json()["totals"]) == 16

    @pytest.mark.parametrize("first", ["morning", "afternoon"])
    async def test_partly_overlapping_activities_credit_the_union(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
        first: str,
    ) -> None:
        """09–17 and 13–21, 8 hours each: 12 hours were covered, not 16."""
        user, member = await _member(db, world)
        morning = await _activity(client, world, _local(tomorrow, 9), _local(tomorrow, 17), 8)
        afternoon = await _activity(client, world, _local(tomorrow, 13), _local(tomorrow, 21), 8)
        await _sign_up(client, morning, member)
        await _sign_up(client, afternoon, member)
        order = [morning, afternoon] if first == "morning" else [afternoon, morning]
        # Checked in by officers afterwards, in either order.
        fake_clock.set(_local(tomorrow, 22))
        credited = []
        for activity in order:
            r = await client.put(
                f"/activities/{activity['id']}/attendance/{user.id}",
                json={"status": "present"},
                headers=world.officer_headers,
            )
            assert r.status_code == 200, r.text
            credited.append(r.json()["credited_hours"])
        assert credited == [8, 4]
        assert await _approved_hours(db, user, tomorrow) == 12

    async def test_service_hours_below_the_time_leave_room_for_the_rest(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        _, member = await _member(db, world)
        a = await _activity(client, world, _local(tomorrow, 9), _local(tomorrow, 13), 2)
        b = await _activity(client, world, _local(tomorrow, 11), _local(tomorrow, 15), 4)
        await _sign_up(client, a, member)
        await _sign_up(client, b, member)
        assert await _attend(client, fake_clock, a, member) == 2
        # 13:00–15:00 was not covered by the first: 2 hours, not 4.
        assert await _attend(client, fake_clock, b, member) == 2

    async def test_an_absent_mark_frees_the_time(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        user, member = await _member(db, world)
        a = await _activity(client, world, _local(tomorrow, 9), _local(tomorrow, 17), 8)
        b = await _activity(client, world, _local(tomorrow, 9), _local(tomorrow, 17), 8)
        await _sign_up(client, a, member)
        await _sign_up(client, b, member)
        assert await _attend(client, fake_clock, a, member) == 8
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "absent"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200
        assert await _attend(client, fake_clock, b, member) == 8

    def test_uncovered_time(self) -> None:
        t = datetime.fromisoformat("2026-12-01T00:00:00+08:00")

        def h(n: float) -> datetime:
            return t + timedelta(hours=n)

        assert uncovered_seconds(h(0), h(8), []) == 8 * 3600
        assert uncovered_seconds(h(0), h(8), [(h(-2), h(1)), (h(2), h(3)), (h(2.5), h(4))]) == (
            5 * 3600
        )
        assert uncovered_seconds(h(0), h(8), [(h(-1), h(9))]) == 0
        assert uncovered_seconds(h(0), h(8), [(h(8), h(9)), (h(-1), h(0))]) == 8 * 3600
        assert local_dates(h(20), h(30)) == [h(0).date(), h(24).date()]


class TestDailyCap:
    async def test_credits_are_clipped_to_what_is_left_of_the_day(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        """An approved 8-hour record and two 12-hour activities of one day: 24, not 32."""
        user, member = await _member(db, world)
        night = await _activity(client, world, _local(tomorrow, 0), _local(tomorrow, 12), 12)
        day = await _activity(client, world, _local(tomorrow, 12), _local(tomorrow, 24), 12)
        await _sign_up(client, night, member)
        await _sign_up(client, day, member)
        fake_clock.set(_local(tomorrow, 0))
        record = await _submit(client, world, member, tomorrow, 8)
        r = await client.post(
            f"/contributions/{record}/approve", json={}, headers=world.officer_headers
        )
        assert r.status_code == 200, r.text
        assert await _attend(client, fake_clock, night, member) == 12
        assert await _attend(client, fake_clock, day, member) == 4
        assert await _approved_hours(db, user, tomorrow) == 24
        # With the day full, a further credit is nothing at all.
        third = await _activity(
            client, world, _local(tomorrow, 23), _local(tomorrow, 23.5) + timedelta(hours=1), 1
        )
        await _sign_up(client, third, member)
        assert await _attend(client, fake_clock, third, member) == 0
        assert await _approved_hours(db, user, tomorrow) == 24

    async def _two_records_and_a_credit(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        day: date,
    ) -> tuple[User, str, str]:
        """Two pending 12-hour records (24 hours: allowed when logged), then an 8-hour
        activity the same day."""
        user, member = await _member(db, world)
        activity = await _activity(client, world, _local(day, 10), _local(day, 18), 8)
        await _sign_up(client, activity, member)
        fake_clock.set(_local(day, 9))
        first = await _submit(client, world, member, day, 12)
        second = await _submit(client, world, member, day, 12)
        assert await _attend(client, fake_clock, activity, member) == 8
        return user, first, second

    async def test_an_approval_that_would_pass_24_hours_is_refused(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        user, first, second = await self._two_records_and_a_credit(
            client, db, world, fake_clock, tomorrow
        )
        r = await client.post(
            f"/contributions/{first}/approve", json={}, headers=world.officer_headers
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            f"/contributions/{second}/approve", json={}, headers=world.officer_headers
        )
        assert r.status_code == 422
        assert r.json()["code"] == "daily_hours_exceeded"
        assert r.json()["errors"][0]["field"] == "hours"
        assert "4" in r.json()["errors"][0]["message"]
        status = await db.scalar(
            select(Contribution.status)
            .where(Contribution.id == uuid.UUID(second))
            .execution_options(populate_existing=True)
        )
        assert status == "pending"
        assert await _approved_hours(db, user, tomorrow) == 20
        # Rejecting or returning it is still possible.
        r = await client.post(
            f"/contributions/{second}/return",
            json={"reason": "当天时长超过24小时"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200

    async def test_a_batch_approves_in_order_and_refuses_what_passes_the_day(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        user, first, second = await self._two_records_and_a_credit(
            client, db, world, fake_clock, tomorrow
        )
        r = await client.post(
            "/contributions/review",
            json={"ids": [second, first], "decision": "approve"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": second, "ok": True, "status": "approved", "code": None},
            {"id": first, "ok": False, "status": "pending", "code": "daily_hours_exceeded"},
        ]
        assert await _approved_hours(db, user, tomorrow) == 20

    async def test_a_confirmed_late_check_in_is_clipped_too(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
        tomorrow: date,
    ) -> None:
        user, member = await _member(db, world)
        activity = await _activity(client, world, _local(tomorrow, 10), _local(tomorrow, 18), 8)
        await _sign_up(client, activity, member)
        fake_clock.set(_local(tomorrow, 9))
        record = await _submit(client, world, member, tomorrow, 20)
        fake_clock.set(_local(tomorrow, 10.5))
        scanned = fake_clock()
        fake_clock.set(_local(tomorrow, 20))
        r = await client.post(
            f"/activities/{activity['id']}/attendance",
            json={**CENTRE, "scanned_at": scanned.isoformat()},
            headers=member,
        )
        assert r.json()["status"] == "pending"
        attendance_id = r.json()["id"]
        r = await client.post(
            f"/contributions/{record}/approve", json={}, headers=world.officer_headers
        )
        assert r.status_code == 200
        r = await client.post(
            "/attendance/review",
            json={"ids": [attendance_id], "decision": "confirm"},
            headers=tree.h_s1,
        )
        assert r.json()["results"][0]["ok"] is True
        (credit,) = (
            await db.execute(
                select(ActivityCredit).where(
                    ActivityCredit.activity_id == uuid.UUID(activity["id"])
                )
            )
        ).scalars()
        assert credit.hours == 4
        assert await _approved_hours(db, user, tomorrow) == 24
