"""Statistics of a subtree and the exports for the secretary's spreadsheet."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.models.activity import Activity, Attendance, Signup
from app.models.contribution import Contribution
from app.models.kit import AuditLog
from tests.contributions.helpers import (
    CountQueries,
    World,
    create,
    in_state,
    make_credit,
    make_member,
    today,
)
from tests.fixtures.factories import make_client, make_user
from tests.fixtures.problems import assert_problem


async def seed_activity(db: AsyncSession, world: World, *, confirmed: int, present: int) -> None:
    """A completed activity of r1 that started yesterday, with sign-ups and attendance."""
    starts = clock.now() - timedelta(days=1)
    activity = Activity(
        org_id=world.tree.r1.id,
        district_id=world.tree.d1.id,
        title="主题党日",
        description="",
        category="study",
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        location_name="党员服务中心",
        lat=29.87,
        lng=121.55,
        radius_m=200,
        visibility="org",
        service_hours=2,
        post="community",
        status="completed",
    )
    db.add(activity)
    await db.flush()
    for i in range(confirmed):
        user = await make_user(db, name=f"参加者{i}", phone=f"1370000{i:04d}")
        db.add(Signup(activity_id=activity.id, user_id=user.id, status="confirmed"))
        if i < present:
            db.add(
                Attendance(
                    activity_id=activity.id,
                    user_id=user.id,
                    org_id=activity.org_id,
                    status="present",
                    method="code",
                    attended_at=starts,
                )
            )
    await db.commit()


class TestOrgsStats:
    async def test_figures_of_the_subtree(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        await in_state(client, world, "approved")  # alice, 1 h, community, r1
        await in_state(client, world, "pending")
        await create(
            client, world.bob, world.tree.e1, post="enterprise", category="safety", hours=3
        )
        to_approve = (await create(client, world.bob, world.tree.e1, hours=2))["id"]
        r = await client.post(
            f"/contributions/{to_approve}/approve", json={}, headers=world.tree.h_r1
        )
        assert r.status_code == 200
        await make_credit(db, world.alice, world.tree.r1, day=today(), hours=1.5)
        await make_credit(db, world.carol, world.tree.r3, day=today(), hours=4)  # elsewhere
        await seed_activity(db, world, confirmed=4, present=3)
        local = await make_member(db, None)
        r = await client.post(
            "/checkins", json={"org_id": str(world.tree.r2.id)}, headers=local.headers
        )
        assert r.status_code == 201
        first = today() - timedelta(days=30)
        r = await client.get(
            f"/orgs/{world.tree.s1.id}/stats",
            params={"from": first.isoformat(), "to": today().isoformat()},
            headers=world.tree.h_s1_worker,
        )
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["from"] == first.isoformat()
        assert data["members"] == 2  # alice (r1) and bob (e1); carol is in another district
        assert data["floating_members"] == 2
        assert data["pending_checkins"] == 1
        assert data["pending_contributions"] == 2
        # The seeded one and the one behind alice's credit (no sign-ups); not carol's (r3).
        assert (data["activities"], data["signups"], data["attendances"]) == (2, 4, 3)
        assert data["attendance_rate"] == 0.75
        by_month: dict[tuple[str, str], tuple[float, int]] = {}
        for cell in data["contribution_hours"]:
            by_month[(cell["month"], cell["post"])] = (cell["hours"], cell["count"])
        assert sum(h for h, _ in by_month.values()) == 1 + 2 + 1.5
        assert sum(n for _, n in by_month.values()) == 3
        assert {post for _, post in by_month} == {"community"}
        # r2's subtree has none of it.
        r = await client.get(f"/orgs/{world.tree.r2.id}/stats", headers=world.tree.h_s1_worker)
        assert r.json()["members"] == 0
        assert r.json()["pending_checkins"] == 1
        assert r.json()["attendance_rate"] is None

    async def test_month_buckets(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        await make_credit(db, world.alice, world.tree.r1, day=date(2026, 1, 31), hours=1)
        await make_credit(db, world.alice, world.tree.r1, day=date(2026, 2, 1), hours=2)
        await make_credit(
            db, world.alice, world.tree.r1, day=date(2026, 2, 9), hours=3, post="enterprise"
        )
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/stats",
            params={"from": "2026-01-01", "to": "2026-03-31"},
            headers=world.tree.h_r1,
        )
        assert r.json()["contribution_hours"] == [
            {"month": "2026-01", "post": "community", "hours": 1.0, "count": 1},
            {"month": "2026-02", "post": "community", "hours": 2.0, "count": 1},
            {"month": "2026-02", "post": "enterprise", "hours": 3.0, "count": 1},
        ]

    async def test_city_clients_need_stats_read(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        _, city = await make_client(db, scopes="stats:read")
        r = await client.get(f"/orgs/{world.tree.r1.id}/stats", headers=city)
        assert r.status_code == 200, r.text
        _, bound = await make_client(db, scopes="stats:read", org=world.tree.d2)
        r = await client.get(f"/orgs/{world.tree.r1.id}/stats", headers=bound)
        assert_problem(r, 403, "forbidden")
        _, other = await make_client(db, scopes="orgs:read")
        r = await client.get(f"/orgs/{world.tree.r1.id}/stats", headers=other)
        assert_problem(r, 403, "scope_missing")

    async def test_outsiders_and_bad_ranges(self, client: httpx.AsyncClient, world: World) -> None:
        url = f"/orgs/{world.tree.r1.id}/stats"
        assert_problem(await client.get(url, headers=world.tree.h_r2), 403, "forbidden")
        assert_problem(await client.get(url, headers=world.alice.headers), 403, "forbidden")
        assert_problem(
            await client.get(f"/orgs/{uuid.uuid4()}/stats", headers=world.tree.h_r1),
            404,
            "not_found",
        )
        r = await client.get(
            url, params={"from": "2026-03-01", "to": "2026-02-01"}, headers=world.tree.h_r1
        )
        assert_problem(r, 422, "validation_error")

    async def test_fixed_number_of_queries(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        count_queries: CountQueries,
    ) -> None:
        async def measure() -> int:
            with count_queries() as q:
                r = await client.get(
                    f"/orgs/{world.tree.d1.id}/stats", headers=world.tree.h_s1_worker
                )
            assert r.status_code in (200, 403)
            return q.count

        few = await measure()
        for _ in range(3):
            await in_state(client, world, "approved")
        await seed_activity(db, world, confirmed=2, present=1)
        assert await measure() == few


def contribution_rows(world: World, n: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    members = [world.alice.user, world.bob.user]
    return [
        {
            "id": uuid.uuid4(),
            "user_id": members[i % 2].id,
            "org_id": world.tree.r1.id if i % 2 == 0 else world.tree.e1.id,
            "post": "community" if i % 3 else "enterprise",
            "category": "volunteering" if i % 3 else "safety",
            "title": f"事项{i}",
            "description": None,
            "occurred_on": today() - timedelta(days=i % 60),
            "half_hours": 1 + i % 4,
            "status": "approved" if i % 5 else "pending",
            "source": "manual",
            "possible_duplicate": False,
            "attachment_count": 0,
            "submitted_at": now,
            "created_at": now - timedelta(seconds=n - i),
            "updated_at": now,
        }
        for i in range(n)
    ]


class TestOrgsExportsGet:
    async def test_10000_contributions_as_xlsx(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        await db.execute(insert(Contribution), contribution_rows(world, 10_000))
        await db.commit()
        await make_credit(db, world.alice, world.tree.r1, day=today(), hours=2)
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/exports/contributions",
            params={"format": "xlsx"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text[:300]
        assert r.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        assert "attachment" in r.headers["content-disposition"]
        book = load_workbook(io.BytesIO(r.content), read_only=True)
        sheet = book.active
        assert sheet is not None
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0][:8] == (
            "姓名",
            "手机号",
            "所属组织",
            "岗位",
            "类别",
            "事项",
            "日期",
            "时长（小时）",
        )
        assert len(rows) == 1 + 10_000 + 1
        phones = {row[1] for row in rows[1:]}
        assert phones == {
            "139****5678",
            world.bob.user.phone[:3] + "****" + world.bob.user.phone[-4:],
        }
        assert "13912345678" not in {str(c) for row in rows for c in row}
        first = rows[1]
        assert first[0] == "王小丽" and first[3] == "企业职责岗" and first[4] == "安全生产"
        assert first[8] == "待审核"
        assert rows[-1][9] == "活动记录" and rows[-1][7] == 2
        book.close()
        async with sessionmaker() as s:
            entry = (
                await s.execute(select(AuditLog).where(AuditLog.action == "export.contributions"))
            ).scalar_one()
        assert entry.actor_id == world.tree.r1_officer.id
        assert entry.org_id == world.tree.r1.id
        assert entry.comment is not None and "format=xlsx" in entry.comment

    async def test_csv_with_filters(self, client: httpx.AsyncClient, world: World) -> None:
        await in_state(client, world, "approved")
        await in_state(client, world, "pending")
        await create(client, world.bob, world.tree.e1, title='=HYPERLINK("http://x")')
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/exports/contributions",
            params={"format": "csv", "status": "pending"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        text = r.content.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][0] == "姓名"
        assert len(rows) == 3
        assert {row[8] for row in rows[1:]} == {"待审核"}
        # Formula injection is defused.
        assert '\'=HYPERLINK("http://x")' in [row[5] for row in rows]

    async def test_members_masked(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        from app.models.user import User

        async with db.begin():
            user = await db.get(User, world.alice.user.id)
            assert user is not None
            user.id_number_masked = "3302**********1234"
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/exports/members",
            params={"format": "csv"},
            headers=world.tree.h_r1,
        )
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert rows[0][:3] == ["姓名", "手机号", "身份证号"]
        by_name = {row[0]: row for row in rows[1:]}
        assert set(by_name) == {"王小丽", "陈大伟"}
        assert by_name["王小丽"][1:3] == ["139****5678", "3302**********1234"]

    async def test_attendance(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        await seed_activity(db, world, confirmed=3, present=2)
        r = await client.get(
            f"/orgs/{world.tree.r1.id}/exports/attendance",
            params={"format": "xlsx"},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200
        sheet = load_workbook(io.BytesIO(r.content)).active
        assert sheet is not None
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0][0] == "活动" and rows[0][4] == "手机号"
        assert [row[5] for row in rows[1:]] == ["出席", "出席"]
        assert all("****" in str(row[4]) for row in rows[1:])

    @pytest.mark.parametrize("kind", ["members", "contributions", "attendance"])
    async def test_outsiders_and_bad_input(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        kind: str,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        url = f"/orgs/{world.tree.r1.id}/exports/{kind}"
        assert_problem(await client.get(url, headers=world.tree.h_r2), 403, "forbidden")
        assert_problem(await client.get(url, headers=world.alice.headers), 403, "forbidden")
        _, city = await make_client(db, scopes="stats:read")
        assert_problem(await client.get(url, headers=city), 403, "members_only")
        r = await client.get(url, params={"format": "pdf"}, headers=world.tree.h_r1)
        assert_problem(r, 422, "validation_error")
        async with sessionmaker() as s:
            assert (await s.execute(select(AuditLog.id))).first() is None
        r = await client.get(f"/orgs/{world.tree.r1.id}/exports/payroll", headers=world.tree.h_r1)
        assert_problem(r, 422, "validation_error")
