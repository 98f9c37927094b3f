"""The SQL of reports: statistics aggregates of a subtree and the keyset chunks of exports.

They read across domains (check-ins, activities with their sign-ups and attendance,
contributions with activity credits) and never write.  Every subtree test writes its prefix
into the SQL as a literal (`in_subtree(path, literal=True)`): these statements run over whole
districts, where a generic plan for a bound prefix is much slower.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    func,
    or_,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.authz import in_subtree
from app.contributions import records
from app.models.activity import (
    Activity,
    ActivityCredit,
    ActivityStatus,
    Attendance,
    AttendanceStatus,
    Signup,
    SignupStatus,
)
from app.models.checkin import Checkin
from app.models.contribution import Contribution
from app.models.enums import CheckinStatus
from app.models.organization import Organization
from app.models.user import User

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
After: TypeAlias = "tuple[datetime, uuid.UUID] | None"
"""The (created_at, id) of the last row of the previous chunk; None for the first chunk."""

EXPORT_CHUNK = 1000


class year_month(FunctionElement[str]):
    """'YYYY-MM' of a date column, on both engines."""

    type = String()
    inherit_cache = True


@compiles(year_month, "postgresql")
def _ym_pg(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    return "to_char(%s, 'YYYY-MM')" % compiler.process(element.clauses, **kw)  # noqa: UP031


@compiles(year_month, "sqlite")
def _ym_sqlite(element: year_month, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps dates as 'YYYY-MM-DD' text.
    return "substr(%s, 1, 7)" % compiler.process(element.clauses, **kw)  # noqa: UP031


def _subtree(path: str) -> ColumnElement[bool]:
    return in_subtree(path, literal=True)


def _subtree_orgs(path: str) -> Select[uuid.UUID]:
    return select(Organization.id).where(_subtree(path))


# --- statistics: aggregates only --------------------------------------------------------------


class StatsCounts(NamedTuple):
    members: int
    floating_members: int
    pending_checkins: int
    pending_contributions: int
    activities: int
    signups: int
    attendances: int
    ended_signups: int
    ended_attendances: int


class MonthRow(NamedTuple):
    month: str
    post: str
    half_hours: int | None
    records: int


async def prefer_custom_plans(session: AsyncSession) -> None:
    """PostgreSQL: plan the statistics statements for their actual dates and prefix, for the
    rest of this (read-only) transaction.  After five executions of a prepared statement the
    server may otherwise keep a generic plan (measured on a district with 1M records: the
    hours aggregate went from 0.3 s to 2.4 s)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def stats_counts(
    session: AsyncSession, path: str, starts: datetime, ends: datetime, now: datetime
) -> StatsCounts:
    """One statement of scalar subqueries: members, floating members, pending queues,
    activities starting in [starts, ends), their confirmed sign-ups and attendance."""
    orgs = _subtree_orgs(path)
    approved = and_(Checkin.org_id.in_(orgs), Checkin.status == CheckinStatus.approved)
    activities = select(Activity.id).where(
        Activity.org_id.in_(_subtree_orgs(path)),
        Activity.status.in_((ActivityStatus.published.value, ActivityStatus.completed.value)),
        Activity.starts_at >= starts,
        Activity.starts_at < ends,
    )
    ended = activities.where(Activity.ends_at <= now)
    stmt = select(
        select(func.count(func.distinct(Checkin.user_id)))
        .where(approved)
        .scalar_subquery()
        .label("members"),
        select(func.count(func.distinct(Checkin.user_id)))
        .where(approved, Checkin.floating.is_(True))
        .scalar_subquery()
        .label("floating_members"),
        select(func.count())
        .select_from(Checkin)
        .where(Checkin.org_id.in_(_subtree_orgs(path)), Checkin.status == CheckinStatus.pending)
        .scalar_subquery()
        .label("pending_checkins"),
        select(func.count())
        .select_from(Contribution)
        .where(Contribution.org_id.in_(_subtree_orgs(path)), Contribution.status == records.PENDING)
        .scalar_subquery()
        .label("pending_contributions"),
        select(func.count())
        .select_from(activities.subquery())
        .scalar_subquery()
        .label("activities"),
        select(func.count())
        .select_from(Signup)
        .where(Signup.activity_id.in_(activities), Signup.status == SignupStatus.confirmed.value)
        .scalar_subquery()
        .label("signups"),
        select(func.count())
        .select_from(Attendance)
        .where(
            Attendance.activity_id.in_(activities),
            Attendance.status == AttendanceStatus.present.value,
        )
        .scalar_subquery()
        .label("attendances"),
        select(func.count())
        .select_from(Signup)
        .where(Signup.activity_id.in_(ended), Signup.status == SignupStatus.confirmed.value)
        .scalar_subquery()
        .label("ended_signups"),
        select(func.count())
        .select_from(Attendance)
        .where(
            Attendance.activity_id.in_(ended),
            Attendance.status == AttendanceStatus.present.value,
        )
        .scalar_subquery()
        .label("ended_attendances"),
    )
    return StatsCounts(**(await session.execute(stmt)).one()._mapping)


async def stats_hours(session: AsyncSession, path: str, first: date, last: date) -> list[MonthRow]:
    """Approved half-hours and counts per month and post (credits included), grouped in SQL."""
    manual = select(
        Contribution.occurred_on.label("day"),
        Contribution.post,
        Contribution.half_hours.label("hh"),
    ).where(
        Contribution.org_id.in_(_subtree_orgs(path)),
        Contribution.status == records.APPROVED,
        Contribution.occurred_on.between(first, last),
    )
    credits = select(
        ActivityCredit.occurred_on.label("day"),
        ActivityCredit.post,
        records.credit_half_hours().label("hh"),
    ).where(
        ActivityCredit.org_id.in_(_subtree_orgs(path)),
        ActivityCredit.status == records.APPROVED,
        ActivityCredit.occurred_on.between(first, last),
    )
    sub = union_all(manual, credits).subquery()
    month = year_month(sub.c.day)
    stmt = (
        select(
            month.label("month"),
            sub.c.post,
            func.sum(sub.c.hh).label("half_hours"),
            func.count().label("records"),
        )
        .group_by(month, sub.c.post)
        .order_by(month, sub.c.post)
    )
    return [MonthRow(**r._mapping) for r in await session.execute(stmt)]


# --- export chunks (keyset pages; the caller reads each in a short transaction) ---------------


class ContributionLine(NamedTuple):
    id: uuid.UUID
    created_at: datetime
    user_name: str
    user_phone: str
    org_name: str
    post: str
    category: str
    title: str
    occurred_on: date
    half_hours: int
    status: str
    source: str
    submitted_at: datetime
    decided_at: datetime | None
    decision_comment: str | None


class MemberLine(NamedTuple):
    id: uuid.UUID
    created_at: datetime
    floating: bool
    decided_at: datetime | None
    org_name: str
    user_name: str
    user_phone: str
    id_number_masked: str | None
    gender: str | None
    party_status: str | None
    employer: str | None
    post_title: str | None
    record_org_name: str | None


class AttendanceLine(NamedTuple):
    id: uuid.UUID
    created_at: datetime
    status: str
    method: str
    attended_at: datetime
    activity_title: str
    starts_at: datetime
    service_hours: float
    org_name: str
    user_name: str
    user_phone: str


def _after(created: Any, ident: Any, after: After) -> ColumnElement[bool]:
    if after is None:
        return true()
    return or_(created > after[0], and_(created == after[0], ident > after[1]))


async def export_contributions(
    session: AsyncSession,
    path: str,
    *,
    status: str | None,
    first: date | None,
    last: date | None,
    after: After,
) -> list[ContributionLine]:
    manual_where: list[ColumnElement[bool]] = [_subtree(path)]
    credit_where: list[ColumnElement[bool]] = [_subtree(path)]
    if first is not None:
        manual_where.append(Contribution.occurred_on >= first)
        credit_where.append(ActivityCredit.occurred_on >= first)
    if last is not None:
        manual_where.append(Contribution.occurred_on <= last)
        credit_where.append(ActivityCredit.occurred_on <= last)
    sub = records.union(
        records.manual(*manual_where, with_member=True),
        records.credits(*credit_where, with_member=True),
        status=status,
    )
    stmt = (
        select(*(sub.c[name] for name in ContributionLine._fields))
        .where(_after(sub.c.created_at, sub.c.id, after))
        .order_by(sub.c.created_at, sub.c.id)
        .limit(EXPORT_CHUNK)
    )
    return [ContributionLine(**r._mapping) for r in await session.execute(stmt)]


_EXPORT_MEMBERS: AnySelect = (
    select(
        Checkin.id,
        Checkin.created_at,
        Checkin.floating,
        Checkin.decided_at,
        Organization.name.label("org_name"),
        User.name.label("user_name"),
        User.phone.label("user_phone"),
        User.id_number_masked,
        User.gender,
        User.party_status,
        User.employer,
        User.post_title,
        User.record_org_name,
    )
    .join(Organization, Organization.id == Checkin.org_id)
    .join(User, User.id == Checkin.user_id)
    .where(Checkin.status == CheckinStatus.approved)
)


async def export_members(session: AsyncSession, path: str, after: After) -> list[MemberLine]:
    stmt = (
        _EXPORT_MEMBERS.where(_subtree(path), _after(Checkin.created_at, Checkin.id, after))
        .order_by(Checkin.created_at, Checkin.id)
        .limit(EXPORT_CHUNK)
    )
    return [MemberLine(**r._mapping) for r in await session.execute(stmt)]


async def export_attendance(
    session: AsyncSession,
    path: str,
    *,
    starts: datetime | None,
    ends: datetime | None,
    after: After,
) -> list[AttendanceLine]:
    stmt = (
        select(
            Attendance.id,
            Attendance.recorded_at.label("created_at"),
            Attendance.status,
            Attendance.method,
            Attendance.attended_at,
            Activity.title.label("activity_title"),
            Activity.starts_at,
            Activity.service_hours,
            Organization.name.label("org_name"),
            User.name.label("user_name"),
            User.phone.label("user_phone"),
        )
        .join(Activity, Activity.id == Attendance.activity_id)
        .join(Organization, Organization.id == Activity.org_id)
        .join(User, User.id == Attendance.user_id)
        .where(_subtree(path), _after(Attendance.recorded_at, Attendance.id, after))
    )
    if starts is not None:
        stmt = stmt.where(Activity.starts_at >= starts)
    if ends is not None:
        stmt = stmt.where(Activity.starts_at < ends)
    stmt = stmt.order_by(Attendance.recorded_at, Attendance.id).limit(EXPORT_CHUNK)
    return [AttendanceLine(**r._mapping) for r in await session.execute(stmt)]
