"""Attendance that cannot be gamed: a check-in sent late waits for the host's officers, who
confirm or reject it in bulk; nobody marks, confirms or credits their own attendance.

Each test is the attack that used to get through, and the answer now."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.attendance import LateRule
from app.deps import get_app_settings
from app.models.activity import Activity, ActivityCredit, Attendance
from app.models.kit import AuditLog
from app.models.user import User
from tests.activities.conftest import FakeClock, Headers, World, create_activity, member_of
from tests.fixtures.factories import login
from tests.fixtures.orgs import Tree

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


def _ends(activity: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(activity["ends_at"])


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


async def _review(
    client: httpx.AsyncClient, headers: Headers, ids: list[str], decision: str, **more: Any
) -> httpx.Response:
    return await client.post(
        "/attendance/review", json={"ids": ids, "decision": decision, **more}, headers=headers
    )


async def _photo_uploaded_later(
    client: httpx.AsyncClient,
    db: AsyncSession,
    world: World,
    fake_clock: FakeClock,
    user: User,
    a: dict[str, Any],
    later: timedelta,
) -> httpx.Response:
    """The attack: a photo of the code taken 10 minutes into the activity, sent `later` with
    `scanned_at` set to the moment it was shown."""
    shown = _starts(a) + timedelta(minutes=10)
    fake_clock.set(shown)
    code = await _code(client, world, a["id"])
    fake_clock.set(shown + later)
    headers = await login(db, user)
    return await _check_in(client, a["id"], headers, code=code, scanned_at=shown.isoformat())


class TestLateUploads:
    async def test_a_photo_of_the_code_sent_hours_later_credits_nothing_by_itself(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        r = await _photo_uploaded_later(client, db, world, fake_clock, user, a, timedelta(hours=20))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "pending"
        assert body["delay_seconds"] == 20 * 3600
        assert body["credited_hours"] == 0
        assert await _credits(db, a["id"]) == []
        summary = await client.get("/me/contributions/summary", headers=await login(db, user))
        assert all(t["approved_hours"] == 0 for t in summary.json()["totals"])

    async def test_repeating_a_pending_check_in_answers_it_unchanged(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        first = await _photo_uploaded_later(
            client, db, world, fake_clock, user, a, timedelta(hours=1)
        )
        again = await _photo_uploaded_later(
            client, db, world, fake_clock, user, a, timedelta(hours=1)
        )
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        assert await _credits(db, a["id"]) == []

    @pytest.mark.parametrize(
        ("late", "status", "credited"),
        [
            (timedelta(minutes=4, seconds=59), "present", 2),
            (timedelta(minutes=5), "present", 2),
            (timedelta(minutes=5, seconds=1), "pending", 0),
        ],
    )
    async def test_the_threshold_is_five_minutes(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        late: timedelta,
        status: str,
        credited: float,
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        r = await _photo_uploaded_later(client, db, world, fake_clock, user, a, late)
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["credited_hours"]) == (status, credited)
        assert r.json()["delay_seconds"] == int(late.total_seconds())
        assert len(await _credits(db, a["id"])) == (1 if credited else 0)

    async def test_a_location_fix_replayed_after_the_end_is_pending(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        scanned = _ends(a) - timedelta(minutes=1)
        fake_clock.set(_ends(a) + timedelta(hours=3))
        r = await _check_in(
            client,
            a["id"],
            member,
            lat=CENTRE[0],
            lng=CENTRE[1],
            accuracy_m=15,
            scanned_at=scanned.isoformat(),
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending"
        assert r.json()["method"] == "geo"
        assert r.json()["delay_seconds"] == 3 * 3600 + 60
        assert await _credits(db, a["id"]) == []

    async def test_on_time_check_ins_still_credit_at_once(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + timedelta(minutes=3))
        r = await _check_in(client, a["id"], member, lat=CENTRE[0], lng=CENTRE[1], accuracy_m=10)
        assert r.status_code == 201
        assert (r.json()["status"], r.json()["delay_seconds"], r.json()["credited_hours"]) == (
            "present",
            0,
            2,
        )

    @pytest.mark.parametrize(
        ("ahead", "accepted"), [(timedelta(minutes=2), True), (timedelta(minutes=3), False)]
    )
    async def test_scanned_at_in_the_future_is_422_beyond_clock_skew(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        ahead: timedelta,
        accepted: bool,
    ) -> None:
        a, _, member = await _signed_up(client, db, world)
        fake_clock.set(_starts(a) + timedelta(minutes=10))
        r = await _check_in(
            client,
            a["id"],
            member,
            lat=CENTRE[0],
            lng=CENTRE[1],
            accuracy_m=10,
            scanned_at=(fake_clock() + ahead).isoformat(),
        )
        if accepted:
            assert r.status_code == 201, r.text
            # Counted for the moment it arrived, never for a later one.
            assert datetime.fromisoformat(r.json()["attended_at"]) == fake_clock()
        else:
            assert r.status_code == 422
            assert r.json()["errors"][0]["field"] == "scanned_at"
            assert (await db.execute(select(Attendance.id))).first() is None

    def test_the_end_grace_alone_makes_a_check_in_late(self) -> None:
        rule = LateRule(after=timedelta(hours=1), grace=timedelta(minutes=5))
        end = datetime.fromisoformat("2026-11-30T12:00:00+08:00")
        activity = Activity(ends_at=end)
        scanned = end - timedelta(minutes=1)
        assert not rule.is_late(activity, scanned, end + timedelta(minutes=5))
        assert rule.is_late(activity, scanned, end + timedelta(minutes=5, seconds=1))


@pytest.fixture
def short_grace(app: FastAPI) -> Iterator[None]:
    settings = app.state.settings.model_copy(
        update={"attendance_late_after_seconds": 3600, "attendance_end_grace_seconds": 60}
    )
    app.dependency_overrides[get_app_settings] = lambda: settings
    yield
    app.dependency_overrides.pop(get_app_settings, None)


class TestSettings:
    @pytest.mark.parametrize(("after_end", "status"), [(30, "present"), (61, "pending")])
    async def test_a_check_in_after_the_end_and_its_grace_is_pending(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        fake_clock: FakeClock,
        short_grace: None,
        after_end: int,
        status: str,
    ) -> None:
        """With an hour's patience for late uploads but a minute's grace after the end."""
        a, user, _ = await _signed_up(client, db, world)
        scanned = _ends(a) - timedelta(seconds=20)
        fake_clock.set(scanned)
        code = await _code(client, world, a["id"])
        fake_clock.set(_ends(a) + timedelta(seconds=after_end))
        r = await _check_in(
            client, a["id"], await login(db, user), code=code, scanned_at=scanned.isoformat()
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == status


class TestReviewQueue:
    async def test_officers_see_pending_check_ins_with_their_delay(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        r = await _photo_uploaded_later(client, db, world, fake_clock, user, a, timedelta(hours=2))
        attendance_id = r.json()["id"]
        for headers, org in ((world.officer_headers, world.host), (tree.h_s1, world.street)):
            q = await client.get(
                f"/orgs/{org.id}/attendance", params={"status": "pending"}, headers=headers
            )
            assert q.status_code == 200, q.text
            (item,) = q.json()["items"]
            assert item["id"] == attendance_id
            assert item["delay_seconds"] == 7200
            assert item["activity"]["id"] == a["id"]
            assert item["member"]["id"] == str(user.id)
            assert "*" in item["member"]["phone_masked"]
        # An officer elsewhere reads nothing of it; a plain member has no queue.
        q = await client.get(f"/orgs/{world.host.id}/attendance", headers=world.outsider_headers)
        assert q.status_code == 403
        q = await client.get(f"/orgs/{world.outside.id}/attendance", headers=world.outsider_headers)
        assert q.json()["items"] == []
        q = await client.get(f"/orgs/{world.host.id}/attendance", headers=tree.h_member)
        assert q.status_code == 403

    async def test_confirm_and_reject_in_bulk_with_a_result_per_id(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await create_activity(client, world)
        people: list[User] = []
        for _ in range(3):
            user, headers = await member_of(db, world.host)
            await client.post(f"/activities/{a['id']}/signup", headers=headers)
            people.append(user)
        late: list[tuple[User, str]] = []
        for user in people:
            r = await _photo_uploaded_later(
                client, db, world, fake_clock, user, a, timedelta(hours=1)
            )
            late.append((user, r.json()["id"]))
        (u1, id1), (u2, id2), (u3, id3) = late
        unknown = str(uuid.uuid4())
        r = await _review(client, world.officer_headers, [id1, id2, unknown], "confirm")
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": id1, "ok": True, "status": "present", "code": None},
            {"id": id2, "ok": True, "status": "present", "code": None},
            {"id": unknown, "ok": False, "status": None, "code": "not_found"},
        ]
        credited = {c.user_id: c.hours for c in await _credits(db, a["id"])}
        assert credited == {u1.id: 2, u2.id: 2}
        # Rejecting needs a reason; nothing moves without one.
        r = await _review(client, world.officer_headers, [id3], "reject")
        assert r.status_code == 422
        r = await _review(client, world.officer_headers, [id3, id1], "reject", comment="未到场")
        assert r.json()["results"] == [
            {"id": id3, "ok": True, "status": "absent", "code": None},
            {"id": id1, "ok": False, "status": "present", "code": "invalid_transition"},
        ]
        assert u3.id not in {c.user_id for c in await _credits(db, a["id"])}
        # The rejected member cannot try again with another photo.
        again = await _photo_uploaded_later(
            client, db, world, fake_clock, u3, a, timedelta(minutes=1)
        )
        assert again.status_code == 409
        assert again.json()["code"] == "attendance_decided"
        actions = (
            await db.execute(
                select(AuditLog.action).where(AuditLog.object_type == "activity_attendance")
            )
        ).scalars()
        assert sorted(actions) == [
            "activity_attendance.absent",
            "activity_attendance.present",
            "activity_attendance.present",
        ]

    async def test_only_officers_of_the_host_decide(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
    ) -> None:
        a, user, member = await _signed_up(client, db, world)
        r = await _photo_uploaded_later(client, db, world, fake_clock, user, a, timedelta(hours=1))
        attendance_id = r.json()["id"]
        r = await _review(client, world.outsider_headers, [attendance_id], "confirm")
        assert r.json()["results"][0]["code"] == "not_found"
        r = await _review(client, member, [attendance_id], "confirm")
        assert r.status_code == 403
        r = await _review(client, tree.h_r2, [attendance_id], "confirm")  # a sibling
        assert r.json()["results"][0]["code"] == "not_found"
        assert await _credits(db, a["id"]) == []
        r = await _review(client, tree.h_s1, [attendance_id], "confirm")  # above the host
        assert r.json()["results"][0]["ok"] is True
        assert len(await _credits(db, a["id"])) == 1

    async def test_an_officer_may_still_mark_a_pending_check_in_by_hand(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a, user, _ = await _signed_up(client, db, world)
        await _photo_uploaded_later(client, db, world, fake_clock, user, a, timedelta(hours=1))
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["credited_hours"]) == ("present", 2)
        r = await client.put(
            f"/activities/{a['id']}/attendance/{user.id}",
            json={"status": "pending"},
            headers=world.officer_headers,
        )
        assert r.status_code == 422


class TestOwnAttendance:
    async def _officer_signed_up(self, client: httpx.AsyncClient, world: World) -> dict[str, Any]:
        a = await create_activity(client, world)
        r = await client.post(f"/activities/{a['id']}/signup", headers=world.officer_headers)
        assert r.status_code == 201, r.text
        return a

    async def test_an_officer_cannot_mark_themselves_present(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await self._officer_signed_up(client, world)
        fake_clock.set(_starts(a))
        r = await client.put(
            f"/activities/{a['id']}/attendance/{world.officer.id}",
            json={"status": "present"},
            headers=world.officer_headers,
        )
        assert r.status_code == 403
        assert r.json()["code"] == "review_own_forbidden"
        assert await _credits(db, a["id"]) == []
        assert (await db.execute(select(Attendance.id))).first() is None

    async def test_the_officer_holding_the_code_is_not_their_own_witness(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        tree: Tree,
        fake_clock: FakeClock,
    ) -> None:
        a = await self._officer_signed_up(client, world)
        fake_clock.set(_starts(a) + timedelta(minutes=5))
        # From anywhere: the officer reads the code and "scans" it.
        r = await _check_in(
            client, a["id"], world.officer_headers, code=await _code(client, world, a["id"])
        )
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["credited_hours"]) == ("pending", 0)
        attendance_id = r.json()["id"]
        # Nor can they confirm it themselves, alone or in a batch.
        r = await _review(client, world.officer_headers, [attendance_id], "confirm")
        assert r.json()["results"] == [
            {
                "id": attendance_id,
                "ok": False,
                "status": "pending",
                "code": "review_own_forbidden",
            }
        ]
        assert await _credits(db, a["id"]) == []
        # An officer above does.
        r = await _review(client, tree.h_s1, [attendance_id], "confirm")
        assert r.json()["results"][0]["ok"] is True
        (credit,) = await _credits(db, a["id"])
        assert (credit.user_id, credit.hours) == (world.officer.id, 2)

    async def test_an_officer_checking_in_by_location_counts_like_anyone(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        a = await self._officer_signed_up(client, world)
        fake_clock.set(_starts(a) + timedelta(minutes=5))
        r = await _check_in(
            client, a["id"], world.officer_headers, lat=CENTRE[0], lng=CENTRE[1], accuracy_m=10
        )
        assert r.json()["status"] == "present"
