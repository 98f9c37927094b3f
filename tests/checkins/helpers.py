"""Helpers of the check-in tests (on the suite's organization tree, tests/fixtures/orgs.py):
members with a complete profile, and short-cuts through the API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from app.models.kit import AuditLog, OutboxEvent
from app.models.organization import Organization
from app.models.user import User
from tests.conftest import QueryCounter
from tests.fixtures.factories import login, make_user
from tests.fixtures.orgs import Tree

# The `count_queries` fixture of tests/conftest.py.
CountQueries = Callable[[], AbstractContextManager[QueryCounter]]


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
        "approved": [("approve", tree.h_r1, {})],
        "rejected": [("reject", tree.h_r1, {"reason": "不符合条件"})],
        "withdrawn": [("withdraw", headers, None)],
        "left": [("approve", tree.h_r1, {}), ("leave", headers, None)],
    }
    for action, who, body in steps[state]:
        r = await client.post(f"/checkins/{checkin_id}/{action}", json=body, headers=who)
        assert r.status_code == 200, r.text
    return checkin_id, headers
