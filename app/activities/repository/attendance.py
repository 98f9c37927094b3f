"""Attendance records, the service hours they credit, and the officers' queue of late
check-ins."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository.rows import AnySelect, rowcount
from app.authz import in_subtree
from app.core.pagination import PageParams, keyset
from app.models.activity import Activity, ActivityCredit, Attendance
from app.models.organization import Organization
from app.models.user import User


async def attendance_of(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> Attendance | None:
    stmt = select(Attendance).where(
        Attendance.activity_id == activity_id, Attendance.user_id == user_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def credit_of(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> ActivityCredit | None:
    stmt = select(ActivityCredit).where(
        ActivityCredit.activity_id == activity_id, ActivityCredit.user_id == user_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def remove_credit(session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """Take back the member's credit for the activity; how many rows went (0 or 1)."""
    stmt = delete(ActivityCredit).where(
        ActivityCredit.activity_id == activity_id, ActivityCredit.user_id == user_id
    )
    return rowcount(await session.execute(stmt))


async def credited_intervals(
    session: AsyncSession,
    user_id: uuid.UUID,
    starts_at: datetime,
    ends_at: datetime,
    *,
    exclude: uuid.UUID,
) -> list[tuple[datetime, datetime]]:
    """(start, end) of the other activities the member holds a credit for whose time overlaps
    [starts_at, ends_at) (by ix_activity_credits_user_occurred's member, then the activity)."""
    stmt = (
        select(Activity.starts_at, Activity.ends_at)
        .join(ActivityCredit, ActivityCredit.activity_id == Activity.id)
        .where(
            ActivityCredit.user_id == user_id,
            ActivityCredit.status == "approved",
            ActivityCredit.hours > 0,
            ActivityCredit.activity_id != exclude,
            Activity.starts_at < ends_at,
            Activity.ends_at > starts_at,
        )
    )
    return [(row.starts_at, row.ends_at) for row in await session.execute(stmt)]


class QueueRow(NamedTuple):
    """An attendance record as the host's officers review it."""

    id: uuid.UUID
    activity_id: uuid.UUID
    activity_title: str
    activity_starts_at: datetime
    activity_ends_at: datetime
    org_id: uuid.UUID
    user_id: uuid.UUID
    user_name: str
    user_phone: str
    status: str
    method: str
    attended_at: datetime
    recorded_at: datetime
    delay_seconds: int | None
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    decision_comment: str | None


_QUEUE: AnySelect = (
    select(
        Attendance.id,
        Attendance.activity_id,
        Activity.title.label("activity_title"),
        Activity.starts_at.label("activity_starts_at"),
        Activity.ends_at.label("activity_ends_at"),
        Attendance.org_id,
        Attendance.user_id,
        User.name.label("user_name"),
        User.phone.label("user_phone"),
        Attendance.status,
        Attendance.method,
        Attendance.attended_at,
        Attendance.recorded_at,
        Attendance.delay_seconds,
        Attendance.decided_at,
        Attendance.decided_by,
        Attendance.decision_comment,
    )
    .join(Activity, Activity.id == Attendance.activity_id)
    .join(User, User.id == Attendance.user_id)
    .join(Organization, Organization.id == Attendance.org_id)
)


def queue_key(row: QueueRow) -> tuple[datetime, uuid.UUID]:
    return row.recorded_at, row.id


async def queue_page(
    session: AsyncSession, path: str, status: str | None, params: PageParams
) -> list[QueueRow]:
    """Attendance records of activities hosted in the subtree at `path`, oldest first (by
    ix_activity_attendance_org_status_recorded)."""
    stmt = _QUEUE.where(in_subtree(path))
    if status is not None:
        stmt = stmt.where(Attendance.status == status)
    stmt = keyset(stmt, [Attendance.recorded_at, Attendance.id], params)
    return [QueueRow(**r._mapping) for r in await session.execute(stmt)]


async def queue_one(session: AsyncSession, attendance_id: uuid.UUID) -> QueueRow | None:
    row = (await session.execute(_QUEUE.where(Attendance.id == attendance_id))).one_or_none()
    return None if row is None else QueueRow(**row._mapping)


async def decided(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> list[tuple[Attendance, Activity]]:
    """The attendance records `ids` with their activities, in one statement."""
    stmt = (
        select(Attendance, Activity)
        .join(Activity, Activity.id == Attendance.activity_id)
        .where(Attendance.id.in_(ids))
        .order_by(Attendance.id)
    )
    return [(row[0], row[1]) for row in await session.execute(stmt)]
