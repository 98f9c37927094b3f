"""Fixtures of the activities tests: the suite's organization tree as a world of hosts, a
clock the tests move by hand, and helpers to create activities through the API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.tokens import issue_access_token
from app.models.activity import Signup
from app.models.auth import UserSession
from app.models.checkin import Checkin
from app.models.kit import OutboxEvent
from app.models.organization import Organization
from app.models.user import User
from tests.conftest import QueryCounter
from tests.fixtures.factories import login, make_user, next_phone
from tests.fixtures.factories import password_hash as pw_hash
from tests.fixtures.orgs import Tree

Headers = dict[str, str]
QueryCounterFactory = Callable[[], AbstractContextManager[QueryCounter]]


class FakeClock:
    """`app.core.clock.now`, moved by the test instead of by time."""

    def __init__(self, start: datetime) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value

    def set(self, moment: datetime) -> None:
        self.value = moment

    def advance(self, **delta: float) -> None:
        self.value += timedelta(**delta)


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(datetime.now(UTC).replace(microsecond=0))
    monkeypatch.setattr(clock, "now", fake)
    return fake


@dataclass
class World:
    """The suite's tree (tests/fixtures/orgs.py) by the parts its orgs play here:

    district d1 ─ street s1 ─ host r1 ─ child e1
                           └ cohost r2
    other_district d2 ─ s2 ─ outside r3

    officer: the host's secretary; outsider_officer: s2's secretary (over outside);
    cohost_headers: the cohost's secretary's (the cohost lies outside the host officer's
    subtree: naming it invites it, and its secretary accepts)."""

    district: Organization
    street: Organization
    host: Organization
    child: Organization
    cohost: Organization
    other_district: Organization
    outside: Organization
    officer: User
    officer_headers: Headers
    outsider_officer: User
    outsider_headers: Headers
    cohost_headers: Headers


@pytest.fixture
def world(tree: Tree) -> World:
    return World(
        district=tree.d1,
        street=tree.s1,
        host=tree.r1,
        child=tree.e1,
        cohost=tree.r2,
        other_district=tree.d2,
        outside=tree.r3,
        officer=tree.r1_officer,
        officer_headers=tree.h_r1,
        outsider_officer=tree.s2_officer,
        outsider_headers=tree.h_s2,
        cohost_headers=tree.h_r2,
    )


async def member_of(
    db: AsyncSession, org: Organization | None, status: str = "approved"
) -> tuple[User, Headers]:
    """A member with a check-in of `status` at `org` (none when org is None), signed in."""
    user = await make_user(db, name="党员")
    if org is not None:
        db.add(Checkin(user_id=user.id, org_id=org.id, status=status))
        await db.commit()
    return user, await login(db, user)


async def many_members(db: AsyncSession, org: Organization, n: int) -> list[tuple[User, Headers]]:
    """`n` approved, signed-in members of `org`, written in one transaction."""
    users = [User(phone=next_phone(), name=f"党员{i}", password_hash=pw_hash()) for i in range(n)]
    db.add_all(users)
    await db.flush()
    db.add_all([Checkin(user_id=u.id, org_id=org.id, status="approved") for u in users])
    sessions = [
        UserSession(user_id=u.id, expires_at=clock.now() + timedelta(days=1)) for u in users
    ]
    db.add_all(sessions)
    await db.commit()
    out: list[tuple[User, Headers]] = []
    for user, session in zip(users, sessions, strict=True):
        token, _ = issue_access_token(kind="user", subject=str(user.id), session_id=session.id)
        out.append((user, {"Authorization": f"Bearer {token}"}))
    return out


def activity_body(org: Organization, **overrides: Any) -> dict[str, Any]:
    start = clock.now() + timedelta(hours=2)
    body: dict[str, Any] = {
        "org_id": str(org.id),
        "title": "学习贯彻专题党课",
        "description": "地点在党员服务中心二楼",
        "category": "study",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "location": {
            "name": "党员服务中心",
            "address": "南门路1号",
            "lat": 29.8683,
            "lng": 121.5440,
            "radius_m": 200,
        },
        "capacity": 10,
        "visibility": "org",
        "service_hours": 2,
        "post": "community",
    }
    body.update(overrides)
    return body


async def create_activity(
    client: httpx.AsyncClient, world: World, *, publish: bool = True, **overrides: Any
) -> dict[str, Any]:
    r = await client.post(
        "/activities", json=activity_body(world.host, **overrides), headers=world.officer_headers
    )
    assert r.status_code == 201, r.text
    if not publish:
        result: dict[str, Any] = r.json()
        return result
    p = await client.post(f"/activities/{r.json()['id']}/publish", headers=world.officer_headers)
    assert p.status_code == 200, p.text
    published: dict[str, Any] = p.json()
    return published


async def accept_co_host(client: httpx.AsyncClient, world: World, activity_id: str) -> None:
    """The cohost's secretary accepts the invitation to co-host the activity."""
    r = await client.post(
        f"/orgs/{world.cohost.id}/co-host-invitations/{activity_id}/accept",
        headers=world.cohost_headers,
    )
    assert r.status_code == 200, r.text


async def count_signups(db: AsyncSession, activity_id: str, status: str) -> int:
    stmt = select(func.count()).where(
        Signup.activity_id == uuid.UUID(activity_id), Signup.status == status
    )
    return int((await db.execute(stmt)).scalar_one())


async def events(db: AsyncSession, topic: str) -> list[dict[str, Any]]:
    stmt = (
        select(OutboxEvent.payload)
        .where(OutboxEvent.topic == topic)
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
    )
    return list((await db.execute(stmt)).scalars())
