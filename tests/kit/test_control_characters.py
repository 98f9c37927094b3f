"""Control characters in string input, and exports that do not die on stored data.

The attacks: a title holding U+0001 was stored, and from then on the xlsx export of its
organization (and of every ancestor) died after its headers were sent; on PostgreSQL a NUL byte
in a query parameter or a field was a 500.  The answers now: 422 `control_character` naming the
field, nothing stored; tab, CR and LF only in multi-line text; exports of rows stored before
(inserted here behind the API's back) complete, their cells cleaned; an export's parameters are
checked before its first byte.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.models.activity import Activity, Attendance, Signup
from app.models.contribution import Contribution
from app.models.organization import Organization
from tests.contributions.helpers import make_member
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def activity_body(org: Organization, **overrides: Any) -> dict[str, Any]:
    start = clock.now() + timedelta(days=2)
    body: dict[str, Any] = {
        "org_id": str(org.id),
        "title": "学习贯彻专题党课",
        "description": "地点在党员服务中心二楼",
        "category": "study",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "location": {"name": "党员服务中心", "lat": 29.8683, "lng": 121.544},
        "visibility": "org",
        "service_hours": 2,
        "post": "community",
    }
    body.update(overrides)
    return body


async def activities(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(Activity))).scalar_one())


def fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem["errors"]]


class TestBodies:
    @pytest.mark.parametrize("bad", ["\u0001", "\u0000", "\u001f", "\u000b", "\ud800"])
    async def test_a_control_character_in_a_title_is_422_and_nothing_stored(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, bad: str
    ) -> None:
        before = await activities(db)
        # Escaped as JSON must escape them (json.dumps escapes every non-ASCII character too).
        r = await client.post(
            "/activities",
            content=json.dumps(activity_body(tree.r1, title=f"党课{bad}")),
            headers={**tree.h_r1, "Content-Type": "application/json"},
        )
        problem = assert_problem(r, 422, "control_character")
        assert fields(problem) == ["title"]
        assert await activities(db) == before

    async def test_nested_fields_are_named(self, client: httpx.AsyncClient, tree: Tree) -> None:
        body = activity_body(tree.r1, location={"name": "a\u0002", "lat": 29.8, "lng": 121.5})
        r = await client.post("/activities", json=body, headers=tree.h_r1)
        assert fields(assert_problem(r, 422, "control_character")) == ["location.name"]

    @pytest.mark.parametrize("brk", ["\t", "\n", "\r"])
    async def test_line_breaks_only_in_multi_line_text(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, brk: str
    ) -> None:
        before = await activities(db)
        r = await client.post(
            "/activities", json=activity_body(tree.r1, title=f"党课{brk}一"), headers=tree.h_r1
        )
        assert fields(assert_problem(r, 422, "control_character")) == ["title"]
        assert await activities(db) == before
        r = await client.post(
            "/activities",
            json=activity_body(tree.r1, description=f"第一行{brk}第二行"),
            headers=tree.h_r1,
        )
        assert r.status_code == 201, r.text
        assert r.json()["description"] == f"第一行{brk}第二行"

    @pytest.mark.parametrize(
        "change",
        [
            {"name": "王\u0000五"},
            {"employer": "甬新\u0000科技"},
            {"skills": ["摄影", "书\u0000法"]},
            {"post_title": "支部\n书记"},
        ],
    )
    async def test_nul_and_breaks_in_profile_fields(
        self, client: httpx.AsyncClient, tree: Tree, change: dict[str, Any]
    ) -> None:
        r = await client.patch("/me", json=change, headers=tree.h_member)
        assert_problem(r, 422, "control_character")
        me = (await client.get("/me", headers=tree.h_member)).json()
        for key in change:
            assert me[key] != change[key]

    @pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le"])
    async def test_a_body_in_another_unicode_encoding_is_checked_too(
        self, client: httpx.AsyncClient, tree: Tree, encoding: str
    ) -> None:
        """JSON parsers read UTF-16 and UTF-32 as well, whose bytes hide a `\\u` escape from a
        byte search for it."""
        r = await client.patch(
            "/me",
            content=json.dumps({"name": "王\u0000五"}).encode(encoding),
            headers={**tree.h_member, "Content-Type": "application/json"},
        )
        assert fields(assert_problem(r, 422, "control_character")) == ["name"]

    async def test_a_control_character_in_a_key_is_refused(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.patch("/me", json={"na\u0001me": "x"}, headers=tree.h_member)
        assert_problem(r, 422, "control_character")

    async def test_a_form_field(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "139\x0000000000", "password": "x" * 8},
        )
        assert fields(assert_problem(r, 422, "control_character")) == ["username"]

    async def test_the_english_answer(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.patch(
            "/me", json={"name": "a\u0007"}, headers={**tree.h_member, "Accept-Language": "en"}
        )
        problem = assert_problem(r, 422, "control_character")
        assert problem["errors"][0]["message"] == "control characters are not allowed"


class TestQueryAndPath:
    @pytest.mark.parametrize(
        "url",
        [
            "/orgs?q=%E5%B8%82%00",
            "/orgs?q=a%01b",
            "/orgs?q=a%0Ab",
            "/orgs?near=%00",
            "/activities?category=study%00",
            "/me/checkins?cursor=%00",
            "/orgs?%00=1",
        ],
    )
    async def test_nul_and_controls_in_a_query_are_422(
        self, client: httpx.AsyncClient, tree: Tree, url: str
    ) -> None:
        r = await client.get(url, headers=tree.h_s1)
        assert_problem(r, 422, "control_character")

    async def test_nul_in_a_path(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get("/orgs/%00", headers=tree.h_s1)
        assert_problem(r, 422, "control_character")
        r = await client.get(f"/orgs/{tree.r1.id}%00/members", headers=tree.h_s1)
        assert_problem(r, 422, "control_character")

    async def test_clean_queries_still_work(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get("/orgs?q=%E5%B8%82", headers=tree.h_s1)
        assert r.status_code == 200, r.text


async def seed_dirty_rows(db: AsyncSession, tree: Tree) -> None:
    """Rows as they could be stored before input was checked: control characters in an
    activity's title, a member's name and employer, a record's title and comment."""
    member = await make_member(
        db, tree.r1, name="王\x01小丽", employer="甬新\x0b科技", post_title="=cmd|\x02"
    )
    starts = clock.now() - timedelta(days=1)
    activity = Activity(
        org_id=tree.r1.id,
        district_id=tree.d1.id,
        title="主题\x01党日\x1f",
        description="\x01",
        category="study",
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        location_name="党员\x08服务中心",
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
    db.add(Signup(activity_id=activity.id, user_id=member.user.id, status="confirmed"))
    db.add(
        Attendance(
            activity_id=activity.id,
            user_id=member.user.id,
            org_id=activity.org_id,
            status="present",
            method="code",
            attended_at=starts,
        )
    )
    db.add(
        Contribution(
            user_id=member.user.id,
            org_id=tree.r1.id,
            post="community",
            category="volunteering",
            title="\x01社区\x0c宣传",
            description="a\x03b",
            occurred_on=clock.local_today() - timedelta(days=1),
            half_hours=4,
            status="returned",
            decision_comment="请\x1b补充",
        )
    )
    await db.commit()


class TestExports:
    @pytest.mark.parametrize("kind", ["attendance", "contributions", "members"])
    @pytest.mark.parametrize("who", ["r1", "s1"])  # the org's secretary, and its ancestor's
    async def test_xlsx_of_dirty_rows_completes_and_opens(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, kind: str, who: str
    ) -> None:
        await seed_dirty_rows(db, tree)
        org, headers = (tree.r1, tree.h_r1) if who == "r1" else (tree.s1, tree.h_s1)
        r = await client.get(f"/orgs/{org.id}/exports/{kind}?format=xlsx", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == XLSX
        sheet = load_workbook(io.BytesIO(r.content), read_only=True).active
        assert sheet is not None
        rows = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
        text = "".join(str(c) for row in rows for c in row)
        assert len(rows) >= 2
        assert not any(ch < " " and ch not in "\t\n\r" for ch in text)
        expected = {
            "attendance": "主题党日",
            "contributions": "社区宣传",
            "members": "甬新科技",
        }[kind]
        assert expected in text
        assert "王小丽" in text

    async def test_csv_of_dirty_rows(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        await seed_dirty_rows(db, tree)
        r = await client.get(
            f"/orgs/{tree.s1.id}/exports/contributions?format=csv", headers=tree.h_s1
        )
        assert r.status_code == 200, r.text
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert any("社区宣传" in cell for row in rows for cell in row)
        assert not any(ch < " " and ch not in "\t\n\r" for row in rows for c in row for ch in c)

    @pytest.mark.parametrize(
        "query",
        [
            "from=2026-03-02&to=2026-03-01",
            "from=9999-12-31",
            "to=9999-12-31",
            "from=0001-01-01",
            "from=2026-01-01%00",
            "format=pdf",
            "status=nothing",
        ],
    )
    @pytest.mark.parametrize("kind", ["attendance", "contributions"])
    async def test_parameters_are_checked_before_the_first_byte(
        self, client: httpx.AsyncClient, tree: Tree, kind: str, query: str
    ) -> None:
        r = await client.get(f"/orgs/{tree.r1.id}/exports/{kind}?{query}", headers=tree.h_r1)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
