"""Real concurrency against PostgreSQL: the database decides, never a read in Python."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from app.models.kit import AuditLog, OutboxEvent
from tests.checkins.helpers import count, in_state, make_member, status_of
from tests.fixtures.orgs import Tree

pytestmark = [pytest.mark.postgres_only, pytest.mark.committing]


async def test_twenty_identical_checkins_make_one(
    client: httpx.AsyncClient,
    db: AsyncSession,
    tree: Tree,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    _, headers = await make_member(db)
    body = {"org_id": str(tree.r1.id)}
    answers = await asyncio.gather(
        *(client.post("/checkins", json=body, headers=headers) for _ in range(20))
    )
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {201: 1, 409: 19}, [r.text for r in answers if r.status_code >= 500]
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"checkin_exists"}
    assert await count(sessionmaker, Checkin) == 1
    assert await count(sessionmaker, AuditLog, AuditLog.action == "checkin.submitted") == 1
    assert await count(sessionmaker, OutboxEvent, OutboxEvent.topic == "checkin.submitted") == 1


async def test_approve_and_reject_racing_record_one_decision(
    client: httpx.AsyncClient,
    db: AsyncSession,
    tree: Tree,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    checkin_id, _ = await in_state(client, db, tree, "pending", org="e1")
    deciders = [tree.h_r1, tree.h_s1_worker]

    def call(i: int) -> Coroutine[Any, Any, httpx.Response]:
        who = deciders[i % 2]
        if i % 3 == 0:
            return client.post(
                f"/checkins/{checkin_id}/reject", json={"reason": f"理由{i}"}, headers=who
            )
        return client.post(f"/checkins/{checkin_id}/approve", json={}, headers=who)

    answers = await asyncio.gather(*(call(i) for i in range(10)))
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 1, 409: 9}, [r.text for r in answers]
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"invalid_transition"}
    (winner,) = [r.json() for r in answers if r.status_code == 200]
    assert await status_of(sessionmaker, checkin_id) == winner["status"]
    async with sessionmaker() as s:
        decisions = (
            (
                await s.execute(
                    select(AuditLog.action).where(
                        AuditLog.object_id == checkin_id, AuditLog.from_state == "pending"
                    )
                )
            )
            .scalars()
            .all()
        )
        events = (
            (
                await s.execute(
                    select(OutboxEvent.topic).where(
                        OutboxEvent.aggregate_id == checkin_id,
                        OutboxEvent.topic.in_(["checkin.approved", "checkin.rejected"]),
                    )
                )
            )
            .scalars()
            .all()
        )
    assert decisions == [f"checkin.{winner['status']}"]
    assert events == decisions


async def test_batch_and_single_decisions_racing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    tree: Tree,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Two officers review overlapping batches while a third approves one by one: every
    check-in is decided exactly once."""
    ids = [(await in_state(client, db, tree, "pending"))[0] for _ in range(8)]
    calls = [
        client.post(
            "/checkins/review", json={"ids": ids, "decision": "approve"}, headers=tree.h_r1
        ),
        client.post(
            "/checkins/review",
            json={"ids": ids[::-1], "decision": "reject", "comment": "名额已满"},
            headers=tree.h_s1_worker,
        ),
        *(client.post(f"/checkins/{i}/approve", headers=tree.h_s1_worker) for i in ids[:4]),
    ]
    answers = await asyncio.gather(*calls)
    assert all(r.status_code in (200, 409) for r in answers), [r.text for r in answers]
    won: Counter[str] = Counter()
    for r in answers[:2]:
        won.update(x["id"] for x in r.json()["results"] if x["ok"])
    won.update(ids[k] for k, r in enumerate(answers[2:]) if r.status_code == 200)
    assert won == Counter(dict.fromkeys(ids, 1))
    async with sessionmaker() as s:
        rows = (
            (
                await s.execute(
                    select(AuditLog.object_id).where(
                        AuditLog.from_state == "pending", AuditLog.to_state != "pending"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert Counter(rows) == Counter(dict.fromkeys(ids, 1))
