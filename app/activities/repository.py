"""Queries and counter updates of the activities module.

The statements members hit most (the activity list, my sign-ups) and the officers' roster
select only the columns they return and are built once, at import; a request only adds its
filters and binds its values.  Seat and waitlist counters move with one conditional UPDATE
each, never read-then-write in Python.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.errors import AppError
from app.core.pagination import PageParams, decode_cursor, keyset
from app.models.activity import (
    Activity,
    ActivityCredit,
    ActivityStatus,
    Attendance,
    Signup,
    SignupStatus,
    activity_co_hosts,
)
from app.models.enums import OrgKind
from app.models.organization import Organization
from app.models.user import User

ACTIVE = (SignupStatus.confirmed.value, SignupStatus.waitlisted.value)
WAITLISTED = SignupStatus.waitlisted.value
# Statements of many columns, read by name (`row.title`).
AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"
METRES_PER_DEGREE = 111_195.0  # mean Earth radius 6,371,008.8 m × π / 180

_ahead = aliased(Signup, name="ahead")


def _position_of(signup: Any) -> ColumnElement[int | None]:
    """Rank of a waitlisted sign-up among the waitlisted of its activity (1 = next)."""
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


# --- the member list -------------------------------------------------------------------

_mine = aliased(Signup, name="mine")

_LIST: AnySelect = (
    select(
        Activity.id,
        Activity.org_id,
        Activity.title,
        Activity.category,
        Activity.starts_at,
        Activity.ends_at,
        Activity.location_name,
        Activity.location_address,
        Activity.lat,
        Activity.lng,
        Activity.radius_m,
        Activity.capacity,
        Activity.confirmed_count,
        Activity.waitlist_count,
        Activity.signup_deadline,
        Activity.visibility,
        Activity.service_hours,
        Activity.post,
        Activity.status,
        _mine.id.label("my_id"),
        _mine.status.label("my_status"),
        _position_of(_mine).label("my_position"),
    )
    .outerjoin(
        _mine,
        and_(
            _mine.activity_id == Activity.id,
            _mine.user_id == bindparam("me"),
            _mine.status.in_(ACTIVE),
        ),
    )
    .where(Activity.status == ActivityStatus.published.value, Activity.ends_at > bindparam("now"))
)


@dataclass(frozen=True)
class ListFilters:
    org_id: uuid.UUID | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None
    category: str | None = None
    near: tuple[float, float] | None = None
    radius_m: float = 10_000.0


def _distance_sq(lat0: float, lng0: float) -> ColumnElement[float]:
    """Squared distance in m² on the equirectangular projection around (lat0, lng0):
    plain arithmetic, so identical on SQLite and PostgreSQL, and within 0.1 % of the great
    circle at the scale of a city."""
    k_lng = METRES_PER_DEGREE * max(math.cos(math.radians(lat0)), 0.01)
    dy = (Activity.lat - lat0) * METRES_PER_DEGREE
    dx = (Activity.lng - lng0) * k_lng
    return dy * dy + dx * dx


async def list_visible(
    session: AsyncSession,
    *,
    visible: ColumnElement[bool],
    user_id: uuid.UUID,
    now: datetime,
    filters: ListFilters,
    params: PageParams,
) -> Sequence[AnyRow]:
    """One page of the list, restricted to the activities `visible` lets through."""
    stmt = _LIST.where(visible)
    if filters.org_id is not None:
        stmt = stmt.where(
            or_(
                Activity.org_id == filters.org_id,
                exists().where(
                    activity_co_hosts.c.activity_id == Activity.id,
                    activity_co_hosts.c.org_id == filters.org_id,
                ),
            )
        )
    if filters.starts_from is not None:
        stmt = stmt.where(Activity.starts_at >= filters.starts_from)
    if filters.starts_before is not None:
        stmt = stmt.where(Activity.starts_at < filters.starts_before)
    if filters.category is not None:
        stmt = stmt.where(Activity.category == filters.category)
    bind = {"me": user_id, "now": now}
    if filters.near is None:
        stmt = keyset(stmt, [Activity.starts_at, Activity.id], params)
        return (await session.execute(stmt, bind)).all()
    return (await session.execute(_by_distance(stmt, filters, params), bind)).all()


def _by_distance(stmt: AnySelect, filters: ListFilters, params: PageParams) -> AnySelect:
    assert filters.near is not None
    lat0, lng0 = filters.near
    radius = filters.radius_m
    distance_sq = _distance_sq(lat0, lng0)
    # A bounding box first, so that the (lat, lng) index narrows the candidates.
    d_lat = radius / METRES_PER_DEGREE
    d_lng = radius / (METRES_PER_DEGREE * max(math.cos(math.radians(lat0)), 0.01))
    stmt = stmt.add_columns(distance_sq.label("distance_sq")).where(
        Activity.lat.between(lat0 - d_lat, lat0 + d_lat),
        Activity.lng.between(lng0 - d_lng, lng0 + d_lng),
        distance_sq <= radius * radius,
    )
    if params.cursor is not None:
        last_distance, last_id = decode_cursor(params.cursor, 2)
        if not isinstance(last_distance, (int, float)) or not isinstance(last_id, uuid.UUID):
            raise AppError("invalid_cursor")
        stmt = stmt.where(
            or_(
                distance_sq > last_distance,
                and_(distance_sq == last_distance, Activity.id > last_id),
            )
        )
    return stmt.order_by(distance_sq, Activity.id).limit(params.limit + 1)


# --- one activity ----------------------------------------------------------------------


async def get_with_host_path(
    session: AsyncSession, activity_id: uuid.UUID, *, lock: bool = False
) -> tuple[Activity, str] | None:
    """The activity and its host's path; with `lock`, the activity row is locked (FOR UPDATE
    on PostgreSQL; SQLite transactions are serialised already) and re-read fresh."""
    stmt = (
        select(Activity, Organization.path)
        .join(Organization, Organization.id == Activity.org_id)
        .where(Activity.id == activity_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update(of=Activity)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def co_host_ids(session: AsyncSession, activity_id: uuid.UUID) -> list[uuid.UUID]:
    stmt = (
        select(activity_co_hosts.c.org_id)
        .where(activity_co_hosts.c.activity_id == activity_id)
        .order_by(activity_co_hosts.c.org_id)
    )
    return list((await session.execute(stmt)).scalars())


async def replace_co_hosts(
    session: AsyncSession, activity_id: uuid.UUID, org_ids: Sequence[uuid.UUID]
) -> None:
    await session.execute(
        delete(activity_co_hosts).where(activity_co_hosts.c.activity_id == activity_id)
    )
    if org_ids:
        await session.execute(
            insert(activity_co_hosts),
            [{"activity_id": activity_id, "org_id": org} for org in org_ids],
        )


async def existing_org_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    stmt = select(Organization.id).where(Organization.id.in_(ids))
    return set((await session.execute(stmt)).scalars())


async def district_of(session: AsyncSession, host: Organization) -> uuid.UUID:
    """The nearest district at or above the host; the root of its tree when there is none."""
    chain = [uuid.UUID(part) for part in host.path.split("/") if part]
    stmt = (
        select(Organization.id)
        .where(Organization.id.in_(chain), Organization.kind == OrgKind.district.value)
        .order_by(Organization.depth.desc())
        .limit(1)
    )
    found = (await session.execute(stmt)).scalar_one_or_none()
    return found if found is not None else chain[0]


# --- sign-ups --------------------------------------------------------------------------

_MY_ACTIVE: AnySelect = select(
    Signup.id, Signup.status, _position_of(Signup).label("position")
).where(
    Signup.activity_id == bindparam("activity_id"),
    Signup.user_id == bindparam("me"),
    Signup.status.in_(ACTIVE),
)


async def my_active_signup(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> AnyRow | None:
    """(id, status, position) of the member's active sign-up, or None."""
    bind = {"activity_id": activity_id, "me": user_id}
    return (await session.execute(_MY_ACTIVE, bind)).one_or_none()


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
    stmt = select(_position_of(Signup)).where(Signup.id == signup_id)
    return (await session.execute(stmt)).scalar_one()


def _open_for_signup(now: datetime) -> ColumnElement[bool]:
    return and_(
        Activity.status == ActivityStatus.published.value,
        Activity.starts_at > now,
        or_(Activity.signup_deadline.is_(None), Activity.signup_deadline > now),
    )


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


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
    return _rowcount(await session.execute(stmt)) == 1


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


@dataclass(frozen=True)
class Promotion:
    signup_id: uuid.UUID
    user_id: uuid.UUID
    waitlist_seq: int


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
    promoted = (
        await session.execute(
            update(Signup)
            .where(Signup.id.in_(first), Signup.status == WAITLISTED)
            .values(status=SignupStatus.confirmed.value, confirmed_at=now, promoted_at=now)
            .returning(Signup.id, Signup.user_id, Signup.waitlist_seq)
            .execution_options(synchronize_session=False)
        )
    ).all()
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
    if _rowcount(moved) != 1:  # pragma: no cover - would mean the row lock was not held
        raise RuntimeError("capacity would be exceeded by a promotion")
    return sorted(
        (Promotion(row[0], row[1], row[2] or 0) for row in promoted), key=lambda p: p.waitlist_seq
    )


async def cancel_all_signups(
    session: AsyncSession, activity_id: uuid.UUID, now: datetime
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Cancel every active sign-up of the activity: [(signup id, user id)]."""
    stmt = (
        update(Signup)
        .where(Signup.activity_id == activity_id, Signup.status.in_(ACTIVE))
        .values(status=SignupStatus.cancelled.value, cancelled_at=now)
        .returning(Signup.id, Signup.user_id)
        .execution_options(synchronize_session=False)
    )
    return [(row[0], row[1]) for row in (await session.execute(stmt)).all()]


async def confirmed_signup_id(
    session: AsyncSession, activity_id: uuid.UUID, user_id: uuid.UUID
) -> uuid.UUID | None:
    stmt = select(Signup.id).where(
        Signup.activity_id == activity_id,
        Signup.user_id == user_id,
        Signup.status == SignupStatus.confirmed.value,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


# --- my sign-ups and the roster --------------------------------------------------------

_MY_SIGNUPS: AnySelect = (
    select(
        Signup.id,
        Signup.status,
        _position_of(Signup).label("position"),
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
) -> Sequence[AnyRow]:
    stmt = _MY_SIGNUPS
    if status is not None:
        stmt = stmt.where(Signup.status == status)
    stmt = keyset(stmt, [Signup.created_at, Signup.id], params, descending=True)
    return (await session.execute(stmt, {"me": user_id})).all()


_ROSTER: AnySelect = (
    select(
        Signup.id,
        Signup.user_id,
        User.name,
        User.phone,
        Signup.status,
        _position_of(Signup).label("position"),
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
) -> Sequence[AnyRow]:
    stmt = _ROSTER
    if status is not None:
        stmt = stmt.where(Signup.status == status)
    stmt = keyset(stmt, [Signup.created_at, Signup.id], params)
    return (await session.execute(stmt, {"activity_id": activity_id})).all()


# --- attendance and credits ------------------------------------------------------------


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
    stmt = delete(ActivityCredit).where(
        ActivityCredit.activity_id == activity_id, ActivityCredit.user_id == user_id
    )
    return _rowcount(await session.execute(stmt))
