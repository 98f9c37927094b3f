"""Attendance records and the service hours they credit."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository.rows import rowcount
from app.models.activity import ActivityCredit, Attendance


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
