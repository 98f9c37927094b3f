"""The SQL of the officers' review queue of contributions: records of a subtree (manual
records and activity credits, through the union of repository.py) with their member, and the
duplicate hint made current on the page.  (Decisions go through the review mechanism's
conditional UPDATE, app/review/decisions.py.)"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import in_subtree
from app.contributions import records
from app.core.pagination import PageParams
from app.models.contribution import Contribution


class QueueRow(NamedTuple):
    """A record as an officer reviews it: the union's columns, the member's name and phone,
    and the current duplicate hint."""

    id: uuid.UUID
    source: str
    status: str
    post: str
    category: str
    title: str
    description: str | None
    occurred_on: date
    half_hours: int
    org_id: uuid.UUID
    org_name: str
    activity_id: uuid.UUID | None
    attachment_count: int
    submitted_at: datetime
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    decision_comment: str | None
    user_id: uuid.UUID
    created_at: datetime
    version: int | None
    user_name: str
    user_phone: str
    possible_duplicate: bool


async def queue_page(
    session: AsyncSession, path: str, status: str | None, params: PageParams
) -> list[QueueRow]:
    """Records of the subtree, oldest first.  A pending queue is the manual branch alone: the
    planner walks the subtree's organizations by the path index and each one's pending rows by
    ix_contributions_org_status_created.  (The prefix is written into the SQL: see
    `in_subtree(literal=True)`.)"""
    sub = records.union(
        records.manual(in_subtree(path, literal=True), with_member=True),
        records.credits(in_subtree(path, literal=True), with_member=True),
        status=status,
    )
    page = records.with_duplicate_hint(records.page(sub, params, descending=False))
    rows = await session.execute(page.order_by("created_at", "id"))
    return [QueueRow(**r._mapping) for r in rows]


async def queue_one(session: AsyncSession, record_id: uuid.UUID) -> QueueRow | None:
    stmt = records.with_duplicate_hint(
        records.manual(Contribution.id == record_id, with_member=True)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else QueueRow(**row._mapping)
