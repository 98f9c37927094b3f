"""On-site attendance: the rotating code, the geofence, late check-ins from weak networks,
officers' manual marks, and the service hours credited."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import codes
from app.core.clock import LOCAL_TZ
from app.models.activity import ActivityCredit
from app.models.kit import AuditLog
from app.models.user import User
from tests.activities.conftest import (
    FakeClock,
    Headers,
    World,
    create_activity,
    events,
    member_of,
)
from tests.fixtures.factories import login

CENTRE = (29.8683, 121.5440)


async def _credits(db: AsyncSession, activity_id: str) -> list[ActivityCredit]:
    stmt = (
        select(ActivityCredit)
        .where(ActivityCredit.activity_id == uuid.UUID(activity_id))
        .execution_options(populate_existing=True)
    )
    return list((await db.execute(stmt)).scalars())


async def _code(client: httpx.AsyncClient, world: World, activity_id: str) -> str:
    r = await client.get(
        f"/activities/{activity_id}/attendance-code", headers=world.officer_headers
    )
    assert r.status_code == 200, r.text
    code: str = r.json()["code"]
    return code


def _starts(activity: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(activity["starts_at"])


async def _signed_up(
    client: httpx.AsyncClient, db: AsyncSession, world: World, **overrides: Any
) -> tuple[dict[str, Any], User, Headers]:
    """A published activity (start in 2 h, 2 h long, 2 service hours) and a confirmed member."""
    a = await create_activity(client, world, **overrides)
    user, headers = await member_of(db, world.host)
    r = await client.post(f"/activities/{a['id']}/signup", headers=headers)
    assert r.json()["status"] == "confirmed"
    return a, user, headers


async def _check_in(
    client: httpx.AsyncClient, activity_id: str, headers: Headers, **body: Any
) -> httpx.Response:
    return await client.post(f"/activities/{activity_id}/attendance", json=body, headers=headers)


class TestAttendanceCode:
    async def test_officer_reads_a_rotating_code(
        self, client: httpx.AsyncClient, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        fake_clock.set(_starts(a))
        r = await client.get(
            f"/activities/{a['id']}/attendance-code", headers=world.officer_headers
        )
        assert r.status_code == 200
        body = r.json()
        assert len(body["code"]) == 8
        assert set(body["code"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        expires = datetime.fromisoformat(body["expires_at"])
        assert fake_clock() < expires <= fake_clock() + timedelta(seconds=30)
        assert int(expires.timestamp()) % 30 == 0
        assert body["window_seconds"] == 30
        # Same within the window, another one in the next.
        fake_clock.set(expires - timedelta(seconds=1))
        assert await _code(client, world, a["id"]) == body["code"]
        fake_clock.set(expires)
        assert await _code(client, world, a["id"]) != body["code"]

    async def test_each_activity_has_its_own_code(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        a = await create_activity(client, world)
        b = await create_activity(client, world)
        assert await _code(client, world, a["id"]) != await _code(client, world, b["id"])

    async def test_officer_of_another_subtree_cannot_read_it(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        r = await client.get(
            f"/activities/{a['id']}/attendance-code", headers=world.outsider_headers
        )
        assert r.status_code == 403
        r = await client.get(f"/activities/{a['id']}/attendance-code", headers=member)
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"

    async def test_not_for_a_cancelled_activity(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        a = await create_activity(client, world)
        await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": "x"}, headers=world.officer_headers
        )
        r = await client.get(
            f"/activities/{a['id']}/attendance-code", headers=world.officer_headers
        )
        assert r.status_code == 409
        assert r.json()["code"] == "attendance_closed"


class TestCodes:
    def test_previous_window_accepted_older_and_later_not(self) -> None:
        activity_id = uuid.uuid4()
        moment = datetime.fromtimestamp(1_800_000_015).astimezone(LOCAL_TZ)
        w = codes.window_of(moment)
        assert codes.verify(activity_id, codes.code_for(activity_id, w), moment)
        assert codes.verify(activity_id, codes.code_for(activity_id, w - 1), moment)
        assert not codes.verify(activity_id, codes.code_for(activity_id, w - 2), moment)
        assert not codes.verify(activity_id, codes.code_for(activity_id, w + 1), moment)
        assert not codes.verify(uuid.uuid4(), codes.code_for(activity_id, w), moment)

    def test_typing_is_forgiven(self) -> None:
        activity_id = uuid.uuid4()
        moment = datetime.fromtimestamp(1_800_000_000).astimezone(LOCAL_TZ)
        code = codes.code_for(activity_id, codes.window_of(moment))
        typed = f" {code[:4].lower()}-{code[4:]} ".replace("O", "0").replace("I", "1")
        assert codes.verify(activity_id, typed, moment)
        assert not codes.verify(activity_id, code[:7], moment)
        assert not codes.verify(activity_id, code + "A", moment)


class TestAttendanceByCode:
    async def test_code_records_attendance_and_credits_hours(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, member = await _signed_up(client, db, world, post="enterprise")
        fake_clock.set(_starts(a) + timedelta(minutes=5))
        r = await _check_in(client, a["id"], member, code=await _code(client, world, a["id"]))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "present"
        assert body["method"] == "code"
        assert body["credited_hours"] == 2
        assert datetime.fromisoformat(body["attended_at"]) == fake_clock()
        (credit,) = await _credits(db, a["id"])
        assert credit.user_id == user.id
        assert credit.hours == 2
        assert credit.post == "enterprise"
        assert credit.status == "approved"
        assert credit.org_id == world.host.id
        assert credit.occurred_on == _starts(a).astimezone(LOCAL_TZ).date()
        recorded = await events(db, "activity.attendance.recorded")
        assert [(e["user_id"], e["method"], e["credited_hours"]) for e in recorded] == [
            (str(user.id), "code", 2)
        ]
        roster = await client.get(f"/activities/{a['id']}/signups", headers=world.officer_headers)
        assert roster.json()["items"][0]["attendance"]["method"] == "code"
        mine = await client.get("/me/signups", headers=member)
        assert mine.json()["items"][0]["attendance_status"] == "present"

    async def test_repeating_is_harmless_and_credits_once(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        code = await _code(client, world, a["id"])
        first = await _check_in(client, a["id"], member, code=code)
        again = await _check_in(client, a["id"], member, code=code)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        assert len(await _credits(db, a["id"])) == 1
        assert len(await events(db, "activity.attendance.recorded")) == 1

    async def test_previous_window_is_accepted(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        code = await _code(client, world, a["id"])
        fake_clock.advance(seconds=30)
        r = await _check_in(client, a["id"], member, code=code)
        assert r.status_code == 201

    async def test_code_from_an_older_window_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        code = await _code(client, world, a["id"])
        fake_clock.advance(seconds=60)
        r = await _check_in(client, a["id"], member, code=code)
        assert r.status_code == 422
        assert r.json()["code"] == "attendance_code_invalid"
        assert await _credits(db, a["id"]) == []

    async def test_code_of_another_activity_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        other = await create_activity(client, world)
        fake_clock.set(_starts(a))
        r = await _check_in(client, a["id"], member, code=await _code(client, world, other["id"]))
        assert r.status_code == 422
        assert r.json()["code"] == "attendance_code_invalid"

    async def test_made_up_code_is_refused(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        r = await _check_in(client, a["id"], member, code="AAAAAAAA")
        assert r.status_code == 422
        assert r.json()["code"] == "attendance_code_invalid"

    @pytest.mark.parametrize("who", ["waitlisted", "stranger", "cancelled"])
    async def test_confirmed_signup_required(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        who: str,
    ) -> None:
        a, _, _ = await _signed_up(client, db, world, capacity=1)
        _, headers = await member_of(db, world.host)
        if who == "waitlisted":
            r = await client.post(f"/activities/{a['id']}/signup", headers=headers)
            assert r.json()["status"] == "waitlisted"
        elif who == "cancelled":
            await client.patch(
                f"/activities/{a['id']}", json={"capacity": 2}, headers=world.officer_headers
            )
            await client.post(f"/activities/{a['id']}/signup", headers=headers)
            await client.delete(f"/activities/{a['id']}/signup", headers=headers)
        fake_clock.set(_starts(a))
        r = await _check_in(client, a["id"], headers, code=await _code(client, world, a["id"]))
        assert r.status_code == 409
        assert r.json()["code"] == "not_confirmed"
        assert await _credits(db, a["id"]) == []

    @pytest.mark.parametrize(
        ("offset", "accepted"),
        [
            (timedelta(minutes=-31), False),
            (timedelta(minutes=-30), True),
            (timedelta(hours=2), True),  # the end
            (timedelta(hours=2, seconds=1), False),
        ],
    )
    async def test_time_window(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        offset: timedelta,
        accepted: bool,
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + offset)
        r = await _check_in(client, a["id"], member, code=await _code(client, world, a["id"]))
        if accepted:
            assert r.status_code == 201, r.text
        else:
            assert r.status_code == 409
            assert r.json()["code"] == "attendance_closed"

    async def test_unknown_and_draft_activities_are_404(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        draft = await create_activity(client, world, publish=False)
        _, member = await member_of(db, world.host)
        assert (await _check_in(client, draft["id"], member, code="AAAAAAAA")).status_code == 404
        r = await _check_in(client, str(uuid.uuid4()), member, code="AAAAAAAA")
        assert r.status_code == 404


class TestAttendanceByLocation:
    @pytest.mark.parametrize(
        ("fix", "status", "code"),
        [
            ({"lat": CENTRE[0] + 0.001, "lng": CENTRE[1], "accuracy_m": 30}, 201, None),  # 111 m
            (
                {"lat": CENTRE[0] + 0.002, "lng": CENTRE[1], "accuracy_m": 30},
                422,
                "outside_geofence",
            ),
            ({"lat": CENTRE[0], "lng": CENTRE[1], "accuracy_m": 201}, 422, "location_inaccurate"),
            ({"lat": CENTRE[0], "lng": CENTRE[1]}, 422, "validation_error"),
            ({"lat": 91, "lng": CENTRE[1], "accuracy_m": 5}, 422, "validation_error"),
        ],
    )
    async def test_geofence(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        fix: dict[str, float],
        status: int,
        code: str | None,
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        r = await _check_in(client, a["id"], member, **fix)
        assert r.status_code == status, r.text
        if code is None:
            assert r.json()["method"] == "geo"
            assert len(await _credits(db, a["id"])) == 1
        else:
            assert r.json()["code"] == code
            assert await _credits(db, a["id"]) == []

    async def test_code_and_location_together_is_422(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        code = await _code(client, world, a["id"])
        r = await _check_in(
            client, a["id"], member, code=code, lat=CENTRE[0], lng=CENTRE[1], accuracy_m=10
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "code"
        r = await _check_in(client, a["id"], member)
        assert r.status_code == 422
        assert await _credits(db, a["id"]) == []


class TestLateCheckIn:
    async def test_a_day_late_with_the_code_of_that_moment(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        scanned = _starts(a) + timedelta(minutes=10)
        fake_clock.set(scanned)
        code = await _code(client, world, a["id"])
        fake_clock.set(scanned + timedelta(hours=23, minutes=59))
        member = await login(db, user)  # the morning after: a fresh session
        r = await _check_in(client, a["id"], member, code=code, scanned_at=scanned.isoformat())
        assert r.status_code == 201, r.text
        assert datetime.fromisoformat(r.json()["attended_at"]) == scanned
        assert datetime.fromisoformat(r.json()["recorded_at"]) == fake_clock()
        # Recorded, but it waits for an officer to confirm it: no hours by itself.
        assert r.json()["status"] == "pending"
        assert r.json()["credited_hours"] == 0
        assert await _credits(db, a["id"]) == []

    async def test_too_late(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        scanned = _starts(a) + timedelta(minutes=10)
        fake_clock.set(scanned)
        code = await _code(client, world, a["id"])
        fake_clock.set(scanned + timedelta(hours=24, seconds=1))
        member = await login(db, user)
        r = await _check_in(client, a["id"], member, code=code, scanned_at=scanned.isoformat())
        assert r.status_code == 422
        assert r.json()["code"] == "scan_too_old"

    async def test_code_must_belong_to_the_scanned_moment(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + timedelta(minutes=10))
        code = await _code(client, world, a["id"])
        fake_clock.advance(minutes=30)
        claimed = _starts(a) + timedelta(minutes=20)  # not when that code was shown
        r = await _check_in(client, a["id"], member, code=code, scanned_at=claimed.isoformat())
        assert r.status_code == 422
        assert r.json()["code"] == "attendance_code_invalid"

    async def test_scanned_moment_must_lie_in_the_window(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        early = _starts(a) - timedelta(hours=1)
        fake_clock.set(early)
        code = codes.code_for(uuid.UUID(a["id"]), codes.window_of(early))
        fake_clock.set(_starts(a))
        r = await _check_in(client, a["id"], member, code=code, scanned_at=early.isoformat())
        assert r.status_code == 409
        assert r.json()["code"] == "attendance_closed"

    async def test_scanned_in_the_future_is_422(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        future = fake_clock() + timedelta(minutes=10)
        r = await _check_in(client, a["id"], member, code="AAAAAAAA", scanned_at=future.isoformat())
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "scanned_at"

    async def test_geofence_fix_sent_late(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        scanned = _starts(a) + timedelta(minutes=1)
        fake_clock.set(scanned + timedelta(hours=3))
        r = await _check_in(
            client,
            a["id"],
            member,
            lat=CENTRE[0],
            lng=CENTRE[1],
            accuracy_m=15,
            scanned_at=scanned.isoformat(),
        )
        assert r.status_code == 201
        assert r.json()["method"] == "geo"
        assert r.json()["status"] == "pending"
        assert await _credits(db, a["id"]) == []


class TestAttendanceMark:
    async def test_present_then_absent_takes_the_credit_back(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + timedelta(minutes=15))
        url = f"/activities/{a['id']}/attendance/{user.id}"
        r = await client.put(url, json={"status": "present"}, headers=world.officer_headers)
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "manual"
        assert r.json()["credited_hours"] == 2
        assert len(await _credits(db, a["id"])) == 1
        r = await client.put(url, json={"status": "absent"}, headers=world.officer_headers)
        assert r.status_code == 200
        assert r.json()["status"] == "absent"
        assert r.json()["credited_hours"] == 0
        assert await _credits(db, a["id"]) == []
        audit = (
            await db.execute(
                select(AuditLog.action, AuditLog.from_state, AuditLog.to_state)
                .where(AuditLog.action == "activity.attendance.mark")
                .order_by(AuditLog.created_at, AuditLog.id)
            )
        ).all()
        assert [tuple(row) for row in audit] == [
            ("activity.attendance.mark", None, "present"),
            ("activity.attendance.mark", "present", "absent"),
        ]
        recorded = await events(db, "activity.attendance.recorded")
        assert [e["status"] for e in recorded] == ["present", "absent"]
        roster = await client.get(f"/activities/{a['id']}/signups", headers=world.officer_headers)
        assert roster.json()["items"][0]["attendance"]["status"] == "absent"
        # The member cannot overrule the officer with a code afterwards.
        r = await _check_in(client, a["id"], member, code=await _code(client, world, a["id"]))
        assert r.status_code == 409
        assert r.json()["code"] == "attendance_decided"

    async def test_absent_after_a_code_check_in(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        await _check_in(client, a["id"], member, code=await _code(client, world, a["id"]))
        fake_clock.advance(hours=1)
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "absent"},
            headers=world.officer_headers,
        )
        assert r.json()["method"] == "manual"
        assert await _credits(db, a["id"]) == []
        # Back to present: credited again, once.
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.json()["credited_hours"] == 2
        assert len(await _credits(db, a["id"])) == 1

    async def test_no_hours_no_credit(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world, service_hours=0)
        fake_clock.set(_starts(a))
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.json()["credited_hours"] == 0
        assert await _credits(db, a["id"]) == []

    async def test_after_completion_still_allowed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + timedelta(hours=3))
        await client.post(f"/activities/{a['id']}/complete", headers=world.officer_headers)
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200

    async def test_officer_of_another_subtree_cannot_mark(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a))
        url = f"/activities/{a['id']}/attendance/{user.id}"
        r = await client.put(url, json={"status": "present"}, headers=world.outsider_headers)
        assert r.status_code == 403
        r = await client.put(url, json={"status": "present"}, headers=member)
        assert r.status_code == 403
        assert await _credits(db, a["id"]) == []

    async def test_requires_a_confirmed_signup(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        stranger, _ = await member_of(db, world.host)
        fake_clock.set(_starts(a))
        r = await client.put(
            f"/activities/{a['id']}/attendance/{stranger.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.status_code == 409
        assert r.json()["code"] == "not_confirmed"

    async def test_bad_status_and_too_early(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        url = f"/activities/{a['id']}/attendance/{user.id}"
        r = await client.put(url, json={"status": "late"}, headers=world.officer_headers)
        assert r.status_code == 422
        r = await client.put(url, json={"status": "present"}, headers=world.officer_headers)
        assert r.status_code == 409
        assert r.json()["code"] == "attendance_closed"
        total = await db.execute(select(func.count()).select_from(ActivityCredit))
        assert total.scalar_one() == 0
