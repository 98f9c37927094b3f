"""Sign-ups read back: a member's own, the officers' roster, and waitlist positions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from app.activities.repository.rows import AnySelect, typed, typed_one
from app.core.pagination import PageParams, keyset
from app.models.activity import Activity, Attendance, Signup, SignupStatus
from app.models.user import User

ACTIVE = (SignupStatus.confirmed.value, SignupStatus.waitlisted.value)
WAITLISTED = SignupStatus.waitlisted.value

_ahead = aliased(Signup, name="ahead")


def position_of(signup: type[Signup] | AliasedClass[Signup]) -> ColumnElement[int | None]:
    """Rank of a waitlisted sign-up among the waitlisted of its activity (1 = next); null for
    any other status."""
    rank = (
        select(func.count())
        .select_from(_ahead)
        .where(
            _ahead.activity_id == signup.activity_id,
            _ahead.status == WAITLISTED,
            _ahead.waitlist_seq <= signup.waitlist_seq,
        )
        .correlate(signup)
        .scalar_subquery()
    )
    return case((signup.status == WAITLISTED, rank), else_=None)


# --- one member's sign-up --------------------------------------------------------------


class ActiveSignup(NamedTuple):
    id: uuid.UUID
    status: str
    position: int | None


_MY_ACTIVE: AnySelect = select(
    Signup.id, Signup.status, position_of(Signup).label("position")
).where(
    Signup.activity_id == bindparam("activity_id"),
    Signup.user_id == bindparam("me"),
    Signup.status.in_(ACTIVE),
)


async def my_active_signup(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> ActiveSignup | None:
    """The member's confirmed or waitlisted sign-up, with its waitlist position."""
    bind = {"activity_id": activity_id, "me": user_id}
    return typed_one(ActiveSignup, await session.execute(_MY_ACTIVE, bind))


async def active_signup(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> Signup | None:
    stmt = select(Signup).where(
        Signup.activity_id == activity_id,
        Signup.user_id == user_id,
        Signup.status.in_(ACTIVE),
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def waitlist_position(session: AsyncSession, signup_id: uuid.UUID) -> int | None:
    stmt = select(position_of(Signup)).where(Signup.id == signup_id)
    return (await session.execute(stmt)).scalar_one()


async def confirmed_signup_id(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> uuid.UUID | None:
    stmt = select(Signup.id).where(
        Signup.activity_id == activity_id,
        Signup.user_id == user_id,
        Signup.status == SignupStatus.confirmed.value,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


# --- my sign-ups -----------------------------------------------------------------------


class MySignupRow(NamedTuple):
    id: uuid.UUID
    status: str
    position: int | None
    created_at: datetime
    activity_id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime
    location_name: str
    activity_status: str
    attendance_status: str | None


_MY_SIGNUPS: AnySelect = (
    select(
        Signup.id,
        Signup.status,
        position_of(Signup).label("position"),
        Signup.created_at,
        Activity.id.label("activity_id"),
        Activity.title,
        Activity.starts_at,
        Activity.ends_at,
        Activity.location_name,
        Activity.status.label("activity_status"),
        Attendance.status.label("attendance_status"),
    )
    .join(Activity, Activity.id == Signup.activity_id)
    .outerjoin(
        Attendance,
        and_(Attendance.activity_id == Signup.activity_id, Attendance.user_id == Signup.user_id),
    )
    .where(Signup.user_id == bindparam("me"))
)


async def my_signups(
    session: AsyncSession, user_id: uuid.UUID, status: str | None, params: PageParams
) -> list[MySignupRow]:
    """A member's sign-ups, newest first, with their activity and attendance."""
    stmt = _MY_SIGNUPS
    if status is not None:
        stmt = stmt.where(Signup.status == status)
    stmt = keyset(stmt, [Signup.created_at, Signup.id], params, descending=True)
    return typed(MySignupRow, await session.execute(stmt, {"me": user_id}))


# --- the roster ------------------------------------------------------------------------


class RosterRow(NamedTuple):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone: str
    status: str
    position: int | None
    created_at: datetime
    attendance_status: str | None
    attendance_method: str | None
    attended_at: datetime | None


_ROSTER: AnySelect = (
    select(
        Signup.id,
        Signup.user_id,
        User.name,
        User.phone,
        Signup.status,
        position_of(Signup).label("position"),
        Signup.created_at,
        Attendance.status.label("attendance_status"),
        Attendance.method.label("attendance_method"),
        Attendance.attended_at,
    )
    .join(User, User.id == Signup.user_id)
    .outerjoin(
        Attendance,
        and_(Attendance.activity_id == Signup.activity_id, Attendance.user_id == Signup.user_id),
    )
    .where(Signup.activity_id == bindparam("activity_id"))
)


async def roster(
    session: AsyncSession, activity_id: uuid.UUID, status: str | None, params: PageParams
) -> list[RosterRow]:
    """An activity's sign-ups in sign-up order, with each member's attendance."""
    stmt = _ROSTER
    if status is not None:
        stmt = stmt.where(Signup.status == status)
    stmt = keyset(stmt, [Signup.created_at, Signup.id], params)
    return typed(RosterRow, await session.execute(stmt, {"activity_id": activity_id}))
