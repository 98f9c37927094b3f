"""The SQL of contribution records: the member's reads of the union of records and activity
credits, the look-ups behind the rules, the daily-limit lock, and conditional state changes.

The union itself (manual records and activity credits shaped to the same columns) is built in
`records`.  Evidence has its own repository (`evidence.repository`); statistics and exports
live in `app.reports`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.contributions import records
from app.contributions.records import APPROVED, RecordRow, credit_half_hours
from app.contributions.records import cursor_key as cursor_key
from app.core import clock
from app.core.pagination import PageParams
from app.models.activity import ActivityCredit
from app.models.checkin import Checkin
from app.models.contribution import ACTIVE_STATES, Contribution, ContributionDay
from app.models.enums import CheckinStatus
from app.models.organization import Organization
from app.models.user import User


class SummaryRow(NamedTuple):
    post: str
    status: str
    records: int
    half_hours: int | None


async def mine_page(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: str | None,
    post: str | None,
    year: int | None,
    params: PageParams,
) -> list[RecordRow]:
    manual_where: list[ColumnElement[bool]] = [Contribution.user_id == user_id]
    credit_where: list[ColumnElement[bool]] = [ActivityCredit.user_id == user_id]
    if post is not None:
        manual_where.append(Contribution.post == post)
        credit_where.append(ActivityCredit.post == post)
    if year is not None:
        first, last = date(year, 1, 1), date(year, 12, 31)
        manual_where.append(Contribution.occurred_on.between(first, last))
        credit_where.append(ActivityCredit.occurred_on.between(first, last))
    sub = records.union(
        records.manual(*manual_where), records.credits(*credit_where), status=status
    )
    rows = await session.execute(records.page(sub, params, descending=True))
    return [RecordRow(**r._mapping) for r in rows]


async def mine_one(
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID
) -> RecordRow | None:
    sub = records.union(
        records.manual(Contribution.id == record_id, Contribution.user_id == user_id),
        records.credits(ActivityCredit.id == record_id, ActivityCredit.user_id == user_id),
        status=None,
    )
    row = (await session.execute(select(sub))).one_or_none()
    return None if row is None else RecordRow(**row._mapping)


async def summary(session: AsyncSession, user_id: uuid.UUID, year: int) -> list[SummaryRow]:
    """Counts and half-hours per post and status of the member's year (credits approved)."""
    first, last = date(year, 1, 1), date(year, 12, 31)
    manual = select(
        Contribution.post, Contribution.status, Contribution.half_hours.label("hh")
    ).where(Contribution.user_id == user_id, Contribution.occurred_on.between(first, last))
    credits = select(
        ActivityCredit.post, ActivityCredit.status, credit_half_hours().label("hh")
    ).where(
        ActivityCredit.user_id == user_id,
        ActivityCredit.status == APPROVED,
        ActivityCredit.occurred_on.between(first, last),
    )
    sub = union_all(manual, credits).subquery()
    stmt = select(
        sub.c.post,
        sub.c.status,
        func.count().label("records"),
        func.sum(sub.c.hh).label("half_hours"),
    ).group_by(sub.c.post, sub.c.status)
    return [SummaryRow(**r._mapping) for r in await session.execute(stmt)]


# --- look-ups behind the rules ----------------------------------------------------------------


class PermittedOrg(NamedTuple):
    id: uuid.UUID
    name: str


async def permitted_org(
    session: AsyncSession, user: User, org_id: uuid.UUID
) -> PermittedOrg | None:
    """`org_id` (id and name) when the member holds an approved check-in there; None
    otherwise.  An organization's queue receives records only from members it approved: the
    record organization (组织关系所在) is the member's own unverified statement on `PATCH /me`
    and opens no queue.

    The check-in row is share-locked until commit (PostgreSQL; SQLite writers are serialised
    anyway), so that a concurrent "leave" cannot slip between this check and the record."""
    stmt = (
        select(Organization.id, Organization.name)
        .join(Checkin, Checkin.org_id == Organization.id)
        .where(
            Organization.id == org_id,
            Checkin.user_id == user.id,
            Checkin.status == CheckinStatus.approved,
        )
        .limit(1)
        .with_for_update(read=True, of=Checkin)
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else PermittedOrg(row.id, row.name)


async def lock_day(session: AsyncSession, user_id: uuid.UUID, day: date) -> None:
    """Take the member-day lock: an upsert whose ON CONFLICT DO UPDATE holds the row lock on
    PostgreSQL until commit (SQLite writers are serialised by BEGIN IMMEDIATE anyway)."""
    await lock_days(session, [(user_id, day)])


async def lock_days(session: AsyncSession, keys: Iterable[tuple[uuid.UUID, date]]) -> None:
    """Take the locks of several member-days with one upsert, in (member, day) order, so that
    two writers needing the same days never wait for each other crosswise."""
    ordered = sorted(set(keys))
    if not ordered:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = clock.now()
    stmt = insert(ContributionDay).values(
        [{"user_id": user_id, "day": day, "touched_at": now} for user_id, day in ordered]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ContributionDay.user_id, ContributionDay.day],
        set_={"touched_at": now},
    )
    await session.execute(stmt)


async def approved_half_hours(
    session: AsyncSession, keys: Iterable[tuple[uuid.UUID, date]]
) -> dict[tuple[uuid.UUID, date], int]:
    """Approved half-hours per member-day (approved manual records and credits), for the
    given member-days; one statement."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    manual = select(
        Contribution.user_id.label("user_id"),
        Contribution.occurred_on.label("day"),
        Contribution.half_hours.label("hh"),
    ).where(
        Contribution.status == APPROVED,
        or_(*(and_(Contribution.user_id == u, Contribution.occurred_on == d) for u, d in wanted)),
    )
    credited = select(
        ActivityCredit.user_id.label("user_id"),
        ActivityCredit.occurred_on.label("day"),
        credit_half_hours().label("hh"),
    ).where(
        ActivityCredit.status == APPROVED,
        or_(
            *(and_(ActivityCredit.user_id == u, ActivityCredit.occurred_on == d) for u, d in wanted)
        ),
    )
    sub = union_all(manual, credited).subquery()
    stmt = select(sub.c.user_id, sub.c.day, func.sum(sub.c.hh)).group_by(sub.c.user_id, sub.c.day)
    sums = dict.fromkeys(wanted, 0)
    for user_id, day, total in await session.execute(stmt):
        sums[(user_id, day)] = int(total or 0)
    return sums


class DayOf(NamedTuple):
    id: uuid.UUID
    user_id: uuid.UUID
    occurred_on: date
    half_hours: int


async def days_of(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[DayOf]:
    """Member, day and half-hours of the given records."""
    stmt = select(
        Contribution.id, Contribution.user_id, Contribution.occurred_on, Contribution.half_hours
    ).where(Contribution.id.in_(ids))
    return [DayOf(*row) for row in await session.execute(stmt)]


async def day_half_hours(
    session: AsyncSession, user_id: uuid.UUID, day: date, exclude: uuid.UUID | None = None
) -> int:
    """Half-hours the member already has on `day`: active manual records and credits."""
    manual = select(func.coalesce(func.sum(Contribution.half_hours), 0)).where(
        Contribution.user_id == user_id,
        Contribution.occurred_on == day,
        Contribution.status.in_(ACTIVE_STATES),
    )
    if exclude is not None:
        manual = manual.where(Contribution.id != exclude)
    credited = select(func.coalesce(func.sum(credit_half_hours()), 0)).where(
        ActivityCredit.user_id == user_id,
        ActivityCredit.occurred_on == day,
        ActivityCredit.status == APPROVED,
    )
    total = (
        await session.execute(select(manual.scalar_subquery() + credited.scalar_subquery()))
    ).scalar_one()
    return int(total or 0)


async def has_credit(session: AsyncSession, user_id: uuid.UUID, day: date) -> bool:
    stmt = select(
        exists().where(
            ActivityCredit.user_id == user_id,
            ActivityCredit.occurred_on == day,
            ActivityCredit.status == APPROVED,
        )
    )
    return bool((await session.execute(stmt)).scalar())


async def own(
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID, *, lock: bool = False
) -> Contribution | None:
    """The member's record; with `lock` its row is held until commit (an edit takes the row
    before any member-day lock, as a decision does, so neither waits for the other
    crosswise)."""
    stmt = select(Contribution).where(Contribution.id == record_id, Contribution.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


# --- state changes ----------------------------------------------------------------------------


async def change_own(
    session: AsyncSession,
    record_id: uuid.UUID,
    user_id: uuid.UUID,
    from_state: str,
    values: dict[str, Any],
) -> bool:
    """One conditional UPDATE of the member's record in `from_state`; False when it moved."""
    stmt = (
        update(Contribution)
        .where(
            Contribution.id == record_id,
            Contribution.user_id == user_id,
            Contribution.status == from_state,
        )
        .values(updated_at=clock.now(), **values)
        .returning(Contribution.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).first() is not None
