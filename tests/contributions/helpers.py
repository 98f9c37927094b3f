"""Helpers of the contribution tests: members approved in the suite's organization tree,
activity credits written as the activities module writes them, and short-cuts through the
API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.models.activity import Activity, ActivityCredit
from app.models.checkin import Checkin
from app.models.contribution import Contribution, ContributionAttachment
from app.models.kit import AuditLog, OutboxEvent
from app.models.organization import Organization
from app.models.user import User
from tests.conftest import QueryCounter
from tests.fixtures.factories import login, make_user
from tests.fixtures.orgs import Tree

CountQueries = Callable[[], AbstractContextManager[QueryCounter]]


@dataclass
class Member:
    user: User
    headers: dict[str, str]


@dataclass
class World:
    tree: Tree
    alice: Member  # approved at r1
    bob: Member  # approved at e1 (under r1)
    carol: Member  # approved at r3 (another district)


async def approve_at(
    db: AsyncSession, user: User, org: Organization, floating: bool = True
) -> None:
    now = clock.now()
    db.add(
        Checkin(
            user_id=user.id,
            org_id=org.id,
            status="approved",
            floating=floating,
            decided_at=now,
        )
    )
    await db.commit()


async def make_member(db: AsyncSession, org: Organization | None, **fields: Any) -> Member:
    values: dict[str, Any] = {
        "name": "李四",
        "party_status": "full",
        "record_org_name": "外地企业党支部",
        "employer": "甬新科技有限公司",
    }
    values.update(fields)
    user = await make_user(db, **values)
    if org is not None:
        await approve_at(db, user, org)
    return Member(user, await login(db, user))


async def build_world(db: AsyncSession, tree: Tree) -> World:
    return World(
        tree=tree,
        alice=await make_member(db, tree.r1, name="王小丽", phone="13912345678"),
        bob=await make_member(db, tree.e1, name="陈大伟"),
        carol=await make_member(db, tree.r3, name="周敏"),
    )


def today() -> date:
    return clock.local_today()


def body(org: Organization, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "post": "community",
        "category": "volunteering",
        "title": "社区垃圾分类宣传",
        "description": "在小区门口值守两小时",
        "occurred_on": (today() - timedelta(days=1)).isoformat(),
        "hours": 2,
        "org_id": str(org.id),
    }
    data.update(overrides)
    return data


async def create(
    client: httpx.AsyncClient, member: Member, org: Organization, **overrides: Any
) -> dict[str, Any]:
    r = await client.post("/contributions", json=body(org, **overrides), headers=member.headers)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def act(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    record_id: str,
    action: str,
    payload: dict[str, Any] | None = None,
) -> httpx.Response:
    return await client.post(f"/contributions/{record_id}/{action}", json=payload, headers=headers)


async def make_credit(
    db: AsyncSession,
    member: Member,
    org: Organization,
    *,
    day: date,
    hours: float,
    post: str = "community",
    title: str = "敬老院志愿服务",
) -> ActivityCredit:
    """An attendance credit as the activities module writes it."""
    starts = datetime.combine(day, datetime.min.time(), tzinfo=clock.LOCAL_TZ) + timedelta(hours=9)
    activity = Activity(
        org_id=org.id,
        district_id=org.id,
        title=title,
        description="",
        category="volunteer",
        starts_at=starts.astimezone(UTC),
        ends_at=(starts + timedelta(hours=hours)).astimezone(UTC),
        location_name="社区服务中心",
        lat=29.87,
        lng=121.55,
        radius_m=200,
        visibility="org",
        service_hours=hours,
        post=post,
        status="completed",
    )
    db.add(activity)
    await db.flush()
    credit = ActivityCredit(
        activity_id=activity.id,
        user_id=member.user.id,
        org_id=org.id,
        post=post,
        hours=hours,
        occurred_on=day,
        status="approved",
    )
    db.add(credit)
    await db.commit()
    return credit


async def count(
    sessionmaker: async_sessionmaker[AsyncSession], model: Any, *where: ColumnElement[bool]
) -> int:
    async with sessionmaker() as session:
        result = await session.scalar(select(func.count()).select_from(model).where(*where))
    return int(result or 0)


async def written(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, ...]:
    """(records, attachments, audit entries, outbox events)."""
    return (
        await count(sessionmaker, Contribution),
        await count(sessionmaker, ContributionAttachment),
        await count(sessionmaker, AuditLog),
        await count(sessionmaker, OutboxEvent),
    )


async def status_of(sessionmaker: async_sessionmaker[AsyncSession], record_id: str) -> str:
    async with sessionmaker() as session:
        result = await session.scalar(
            select(Contribution.status).where(Contribution.id == uuid.UUID(record_id))
        )
    assert result is not None
    return result


async def in_state(
    client: httpx.AsyncClient, world: World, state: str, member: Member | None = None
) -> str:
    """A record of `member` (alice) at r1 brought into `state` through the API."""
    member = member or world.alice
    record_id: str = (await create(client, member, world.tree.r1, hours=1))["id"]
    officer = world.tree.h_r1
    steps: dict[str, list[tuple[dict[str, str], str, dict[str, Any] | None]]] = {
        "pending": [],
        "approved": [(officer, "approve", {})],
        "rejected": [(officer, "reject", {"reason": "材料不足"})],
        "returned": [(officer, "return", {"reason": "请补充照片"})],
        "withdrawn": [(member.headers, "withdraw", None)],
    }
    for who, action, payload in steps[state]:
        r = await act(client, who, record_id, action, payload)
        assert r.status_code == 200, r.text
    return record_id
