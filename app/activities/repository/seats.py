"""Seats and the waitlist: the counters on the activity row move with one conditional UPDATE
each, never read-then-write in Python, so that concurrent sign-ups cannot pass the capacity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository.rows import rowcount, typed
from app.activities.repository.signups import ACTIVE, WAITLISTED
from app.models.activity import Activity, ActivityStatus, Signup, SignupStatus


def _open_for_signup(now: datetime) -> ColumnElement[bool]:
    return and_(
        Activity.status == ActivityStatus.published.value,
        Activity.starts_at > now,
        or_(Activity.signup_deadline.is_(None), Activity.signup_deadline > now),
    )


async def take_seat(session: AsyncSession, activity_id: uuid.UUID, now: datetime) -> bool:
    """One conditional UPDATE: a seat when the activity is open and not full."""
    stmt = (
        update(Activity)
        .where(
            Activity.id == activity_id,
            _open_for_signup(now),
            or_(Activity.capacity.is_(None), Activity.confirmed_count < Activity.capacity),
        )
        .values(confirmed_count=Activity.confirmed_count + 1)
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt)) == 1


async def join_waitlist(session: AsyncSession, activity_id: uuid.UUID, now: datetime) -> int | None:
    """One conditional UPDATE: the next waitlist number when the activity is open and full."""
    stmt = (
        update(Activity)
        .where(
            Activity.id == activity_id,
            _open_for_signup(now),
            Activity.capacity.is_not(None),
            Activity.confirmed_count >= Activity.capacity,
        )
        .values(
            waitlist_seq=Activity.waitlist_seq + 1,
            waitlist_count=Activity.waitlist_count + 1,
        )
        .returning(Activity.waitlist_seq)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def signup_window(session: AsyncSession, activity_id: uuid.UUID, now: datetime) -> bool:
    """Whether the activity still takes sign-ups (fresh read, after a lost race)."""
    stmt = select(Activity.id).where(Activity.id == activity_id, _open_for_signup(now))
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def leave(session: AsyncSession, activity_id: uuid.UUID, was: str) -> None:
    """Give back a seat or a waitlist place; the caller holds the activity row."""
    column = "confirmed_count" if was == SignupStatus.confirmed.value else "waitlist_count"
    stmt = (
        update(Activity)
        .where(Activity.id == activity_id)
        .values({column: getattr(Activity, column) - 1})
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)


class Promotion(NamedTuple):
    """A waitlisted sign-up moved into a free seat."""

    signup_id: uuid.UUID
    user_id: uuid.UUID
    waitlist_seq: int | None


async def fill_seats(
    session: AsyncSession, activity_id: uuid.UUID, now: datetime
) -> list[Promotion]:
    """Promote the first waitlisted, in arrival order, into every free seat.

    The caller holds the activity row (FOR UPDATE), so the counters read here cannot move;
    the final conditional UPDATE still refuses to pass the capacity whatever happens.
    """
    counts = (
        await session.execute(
            select(Activity.capacity, Activity.confirmed_count, Activity.waitlist_count).where(
                Activity.id == activity_id, Activity.status == ActivityStatus.published.value
            )
        )
    ).one_or_none()
    if counts is None:
        return []
    capacity, confirmed, waiting = counts
    free = waiting if capacity is None else min(capacity - confirmed, waiting)
    if free <= 0:
        return []
    first = (
        select(Signup.id)
        .where(Signup.activity_id == activity_id, Signup.status == WAITLISTED)
        .order_by(Signup.waitlist_seq)
        .limit(free)
    )
    promoted = typed(
        Promotion,
        await session.execute(
            update(Signup)
            .where(Signup.id.in_(first), Signup.status == WAITLISTED)
            .values(status=SignupStatus.confirmed.value, confirmed_at=now, promoted_at=now)
            .returning(
                Signup.id.label("signup_id"),
                Signup.user_id,
                Signup.waitlist_seq,
            )
            .execution_options(synchronize_session=False)
        ),
    )
    n = len(promoted)
    if n == 0:
        return []
    moved = await session.execute(
        update(Activity)
        .where(
            Activity.id == activity_id,
            or_(Activity.capacity.is_(None), Activity.confirmed_count + n <= Activity.capacity),
        )
        .values(
            confirmed_count=Activity.confirmed_count + n,
            waitlist_count=Activity.waitlist_count - n,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(moved) != 1:  # pragma: no cover - would mean the row lock was not held
        raise RuntimeError("capacity would be exceeded by a promotion")
    return sorted(promoted, key=lambda p: p.waitlist_seq or 0)


class CancelledSignup(NamedTuple):
    signup_id: uuid.UUID
    user_id: uuid.UUID


async def cancel_all_signups(
    session: AsyncSession, activity_id: uuid.UUID, now: datetime
) -> list[CancelledSignup]:
    """Cancel every active sign-up of the activity; the caller holds the activity row."""
    stmt = (
        update(Signup)
        .where(Signup.activity_id == activity_id, Signup.status.in_(ACTIVE))
        .values(status=SignupStatus.cancelled.value, cancelled_at=now)
        .returning(Signup.id.label("signup_id"), Signup.user_id)
        .execution_options(synchronize_session=False)
    )
    return typed(CancelledSignup, await session.execute(stmt))
