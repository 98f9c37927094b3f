"""Helpers of the check-in tests: an organization tree with two districts, members with a
complete profile, and short-cuts through the API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from app.models.kit import AuditLog, OutboxEvent
from app.models.organization import Organization
from app.models.user import User
from tests.conftest import QueryCounter
from tests.fixtures.factories import login, make_officer, make_org, make_user

PROBLEM_JSON = "application/problem+json"

# The `count_queries` fixture of tests/conftest.py.
CountQueries = Callable[[], AbstractContextManager[QueryCounter]]


@dataclass
class Tree:
    """district d1 → street s1 → regional r1 → enterprise e1, building b1
                              → regional r2 (a sibling subtree)
    district d2 → regional r3"""

    d1: Organization
    s1: Organization
    r1: Organization
    e1: Organization
    b1: Organization
    r2: Organization
    d2: Organization
    r3: Organization
    # Officers with their Authorization headers.
    r1_officer: User
    r1_headers: dict[str, str]
    r2_officer: User
    r2_headers: dict[str, str]
    s1_officer: User
    s1_headers: dict[str, str]


async def build_tree(db: AsyncSession) -> Tree:
    d1 = await make_org(db, name="海曙区", kind="district", level="committee")
    s1 = await make_org(db, d1, name="西门街道", kind="street", level="committee")
    r1 = await make_org(db, s1, name="天一广场区域党委", kind="regional", level="committee")
    e1 = await make_org(db, r1, name="甬新科技党支部", kind="enterprise", level="branch")
    b1 = await make_org(db, r1, name="国际金融中心楼宇党支部", kind="building", level="branch")
    r2 = await make_org(db, s1, name="月湖社区区域党总支", kind="regional")
    d2 = await make_org(db, name="江东区", kind="district", level="committee")
    r3 = await make_org(db, d2, name="东部新城区域党委", kind="regional", level="committee")
    r1_officer = await make_officer(db, r1, await make_user(db, name="王书记"))
    r2_officer = await make_officer(db, r2, await make_user(db, name="赵书记"))
    s1_officer = await make_officer(db, s1, await make_user(db, name="钱书记"), role="worker")
    return Tree(
        d1=d1,
        s1=s1,
        r1=r1,
        e1=e1,
        b1=b1,
        r2=r2,
        d2=d2,
        r3=r3,
        r1_officer=r1_officer,
        r1_headers=await login(db, r1_officer),
        r2_officer=r2_officer,
        r2_headers=await login(db, r2_officer),
        s1_officer=s1_officer,
        s1_headers=await login(db, s1_officer),
    )


async def make_member(db: AsyncSession, **fields: Any) -> tuple[User, dict[str, str]]:
    """A member with a complete profile (free-text record organization unless told)."""
    values: dict[str, Any] = {
        "name": "李四",
        "party_status": "full",
        "record_org_name": "宁波某外地企业党支部",
        "employer": "甬新科技有限公司",
    }
    values.update(fields)
    user = await make_user(db, **values)
    return user, await login(db, user)


async def submit(
    client: httpx.AsyncClient, headers: dict[str, str], org: Organization, note: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"org_id": str(org.id)}
    if note is not None:
        body["note"] = note
    r = await client.post("/checkins", json=body, headers=headers)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def approve(client: httpx.AsyncClient, headers: dict[str, str], checkin_id: str) -> None:
    r = await client.post(f"/checkins/{checkin_id}/approve", json={}, headers=headers)
    assert r.status_code == 200, r.text


async def count(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[Checkin] | type[AuditLog] | type[OutboxEvent],
    *where: ColumnElement[bool],
) -> int:
    """Rows of `model` matching `where`, read in a short session of its own (a long-lived
    one would hold SQLite's write lock)."""
    async with sessionmaker() as session:
        result = await session.scalar(select(func.count()).select_from(model).where(*where))
    return int(result or 0)


async def status_of(sessionmaker: async_sessionmaker[AsyncSession], checkin_id: str) -> str:
    async with sessionmaker() as session:
        result = await session.scalar(
            select(Checkin.status).where(Checkin.id == uuid.UUID(checkin_id))
        )
    assert result is not None
    return result


async def written(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int, int]:
    """(check-ins, audit entries, outbox events): compare before and after a refused call."""
    return (
        await count(sessionmaker, Checkin),
        await count(sessionmaker, AuditLog),
        await count(sessionmaker, OutboxEvent),
    )


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


Step = tuple[str, dict[str, str], dict[str, str] | None]


async def in_state(
    client: httpx.AsyncClient, db: AsyncSession, tree: Tree, state: str, org: str = "r1"
) -> tuple[str, dict[str, str]]:
    """A check-in of a new member at `org` (decided by r1's officer), brought into `state`
    through the API; its id and the member's headers."""
    _, headers = await make_member(db)
    checkin_id = (await submit(client, headers, getattr(tree, org)))["id"]
    steps: dict[str, list[Step]] = {
        "pending": [],
        "approved": [("approve", tree.r1_headers, {})],
        "rejected": [("reject", tree.r1_headers, {"reason": "不符合条件"})],
        "withdrawn": [("withdraw", headers, None)],
        "left": [("approve", tree.r1_headers, {}), ("leave", headers, None)],
    }
    for action, who, body in steps[state]:
        r = await client.post(f"/checkins/{checkin_id}/{action}", json=body, headers=who)
        assert r.status_code == 200, r.text
    return checkin_id, headers
