"""The SQL of contributions: the union of manual records and activity credits, the daily-limit
lock, conditional state changes, list pages, statistics aggregates and export chunks.

Activity credits (ActivityCredit, owned by the activities module) are read here, never copied:
every member-facing and officer-facing read is a UNION ALL of `contributions` and
`activity_credits` (with their activity's title and category) shaped to the same columns, with
each branch filtered before the union so that both use their own indexes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    Text,
    Uuid,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.core import clock
from app.core.pagination import PageParams, decode_cursor
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
from app.models.contribution import (
    ACTIVE_STATES,
    Contribution,
    ContributionAttachment,
    ContributionDay,
    ContributionSource,
    ContributionStatus,
)
from app.models.enums import CheckinStatus
from app.models.organization import Organization
from app.models.user import User

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"

APPROVED = ContributionStatus.approved.value
PENDING = ContributionStatus.pending.value


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


_PATH = re.compile(r"^(?:/[0-9a-f]{32})+/$")


def in_subtree(path: str) -> ColumnElement[bool]:
    """Organizations under `path`, with the prefix written into the SQL as a literal.

    A bound prefix would let PostgreSQL switch, after five executions of a prepared
    statement, to a generic plan that cannot know how much of the tree the prefix selects
    (measured: 0.3 s becoming 2.4 s on a district with 1M records).  Paths are validated
    hex ids and slashes, so the literal is safe."""
    if not _PATH.match(path):
        raise ValueError("not an organization path")
    return Organization.path.like(literal_column(f"'{path}%'", String))


def credit_half_hours() -> ColumnElement[int]:
    return cast(func.round(ActivityCredit.hours * 2), Integer)


def _with_duplicate_hint(page: Any) -> AnySelect:
    """The page's rows with `possible_duplicate` made current: the stored flag (a credit
    existed at submission) or an approved credit of the same member and day now.  Evaluated
    on the page only, after the limit, not on every row of the queue."""
    sub = page.subquery("page")
    hint = or_(
        sub.c.possible_duplicate,
        exists().where(
            ActivityCredit.user_id == sub.c.user_id,
            ActivityCredit.occurred_on == sub.c.occurred_on,
            ActivityCredit.status == APPROVED,
        ),
    )
    columns = [c for c in sub.c if c.key != "possible_duplicate"]
    return select(*columns, hint.label("possible_duplicate"))


# --- the union of records ---------------------------------------------------------------------


def _manual(*where: ColumnElement[bool], with_member: bool = False) -> AnySelect:
    columns: list[Any] = [
        Contribution.id,
        literal(ContributionSource.manual.value, String).label("source"),
        Contribution.status,
        Contribution.post,
        Contribution.category,
        Contribution.title,
        Contribution.description,
        Contribution.occurred_on,
        Contribution.half_hours,
        Contribution.org_id,
        Organization.name.label("org_name"),
        cast(null(), Uuid).label("activity_id"),
        Contribution.attachment_count,
        Contribution.possible_duplicate,
        Contribution.submitted_at,
        Contribution.decided_at,
        Contribution.decided_by,
        Contribution.decision_comment,
        Contribution.user_id,
        Contribution.created_at,
    ]
    stmt = select(*columns).join(Organization, Organization.id == Contribution.org_id)
    if with_member:
        stmt = stmt.add_columns(User.name.label("user_name"), User.phone.label("user_phone")).join(
            User, User.id == Contribution.user_id
        )
    return stmt.where(*where)


def _credits(*where: ColumnElement[bool], with_member: bool = False) -> AnySelect:
    columns: list[Any] = [
        ActivityCredit.id,
        literal(ContributionSource.activity.value, String).label("source"),
        ActivityCredit.status,
        ActivityCredit.post,
        Activity.category,
        Activity.title,
        cast(null(), Text).label("description"),
        ActivityCredit.occurred_on,
        credit_half_hours().label("half_hours"),
        ActivityCredit.org_id,
        Organization.name.label("org_name"),
        ActivityCredit.activity_id,
        literal(0, Integer).label("attachment_count"),
        false().label("possible_duplicate"),
        ActivityCredit.created_at.label("submitted_at"),
        ActivityCredit.created_at.label("decided_at"),
        cast(null(), Uuid).label("decided_by"),
        cast(null(), String).label("decision_comment"),
        ActivityCredit.user_id,
        ActivityCredit.created_at,
    ]
    stmt = (
        select(*columns)
        .join(Activity, Activity.id == ActivityCredit.activity_id)
        .join(Organization, Organization.id == ActivityCredit.org_id)
    )
    if with_member:
        stmt = stmt.add_columns(User.name.label("user_name"), User.phone.label("user_phone")).join(
            User, User.id == ActivityCredit.user_id
        )
    return stmt.where(ActivityCredit.status == APPROVED, *where)


def _page(
    sub: Any, params: PageParams | None, *, descending: bool, limit: int | None = None
) -> AnySelect:
    """Keyset over (created_at, id) of a union subquery."""
    created, ident = sub.c.created_at, sub.c.id
    stmt: AnySelect = select(sub)
    if params is not None and params.cursor is not None:
        at, last = decode_cursor(params.cursor, 2)
        if descending:
            stmt = stmt.where(or_(created < at, and_(created == at, ident < last)))
        else:
            stmt = stmt.where(or_(created > at, and_(created == at, ident > last)))
    order = [created.desc(), ident.desc()] if descending else [created.asc(), ident.asc()]
    size = params.limit + 1 if params is not None else limit
    return stmt.order_by(*order).limit(size)


def _records(manual: AnySelect, credits: AnySelect | None, *, status: str | None) -> Any:
    """Both branches unless the status filter excludes credits (they are all approved)."""
    if status is not None:
        manual = manual.where(Contribution.status == status)
    if credits is None or status not in (None, APPROVED):
        return manual.subquery("records")
    return union_all(manual, credits).subquery("records")


def cursor_key(row: AnyRow) -> tuple[datetime, uuid.UUID]:
    return row.created_at, row.id


async def mine_page(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: str | None,
    post: str | None,
    year: int | None,
    params: PageParams,
) -> Sequence[AnyRow]:
    manual_where: list[ColumnElement[bool]] = [Contribution.user_id == user_id]
    credit_where: list[ColumnElement[bool]] = [ActivityCredit.user_id == user_id]
    if post is not None:
        manual_where.append(Contribution.post == post)
        credit_where.append(ActivityCredit.post == post)
    if year is not None:
        first, last = date(year, 1, 1), date(year, 12, 31)
        manual_where.append(Contribution.occurred_on.between(first, last))
        credit_where.append(ActivityCredit.occurred_on.between(first, last))
    sub = _records(_manual(*manual_where), _credits(*credit_where), status=status)
    return (await session.execute(_page(sub, params, descending=True))).all()


async def mine_one(
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID
) -> AnyRow | None:
    sub = _records(
        _manual(Contribution.id == record_id, Contribution.user_id == user_id),
        _credits(ActivityCredit.id == record_id, ActivityCredit.user_id == user_id),
        status=None,
    )
    return (await session.execute(select(sub))).one_or_none()


async def summary(session: AsyncSession, user_id: uuid.UUID, year: int) -> Sequence[AnyRow]:
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
        sub.c.post, sub.c.status, func.count().label("n"), func.sum(sub.c.hh).label("hh")
    ).group_by(sub.c.post, sub.c.status)
    return (await session.execute(stmt)).all()


# --- look-ups behind the rules ----------------------------------------------------------------


async def permitted_org(
    session: AsyncSession, user: User, org_id: uuid.UUID
) -> tuple[uuid.UUID, str] | None:
    """(id, name) of `org_id` when the member is approved there or it is their record
    organization; None otherwise."""
    approved = exists().where(
        Checkin.user_id == user.id,
        Checkin.org_id == Organization.id,
        Checkin.status == CheckinStatus.approved,
    )
    own_record = (
        Organization.id == user.record_org_id if user.record_org_id is not None else false()
    )
    row = (
        await session.execute(
            select(Organization.id, Organization.name).where(
                Organization.id == org_id, or_(approved, own_record)
            )
        )
    ).one_or_none()
    return None if row is None else (row.id, row.name)


async def lock_day(session: AsyncSession, user_id: uuid.UUID, day: date) -> None:
    """Take the member-day lock: an upsert whose ON CONFLICT DO UPDATE holds the row lock on
    PostgreSQL until commit (SQLite writers are serialised by BEGIN IMMEDIATE anyway)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = clock.now()
    stmt = insert(ContributionDay).values(user_id=user_id, day=day, touched_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ContributionDay.user_id, ContributionDay.day],
        set_={"touched_at": now},
    )
    await session.execute(stmt)


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
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID
) -> Contribution | None:
    stmt = select(Contribution).where(Contribution.id == record_id, Contribution.user_id == user_id)
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


async def reserve_attachment(
    session: AsyncSession, record_id: uuid.UUID, user_id: uuid.UUID, limit: int
) -> bool:
    """Count one more attachment, conditionally: never more than `limit`, only while the
    record is editable."""
    stmt = (
        update(Contribution)
        .where(
            Contribution.id == record_id,
            Contribution.user_id == user_id,
            Contribution.status.in_((PENDING, ContributionStatus.returned.value)),
            Contribution.attachment_count < limit,
        )
        .values(attachment_count=Contribution.attachment_count + 1)
        .returning(Contribution.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).first() is not None


async def attachment_with_owner(
    session: AsyncSession, record_id: uuid.UUID, attachment_id: uuid.UUID
) -> AnyRow | None:
    stmt = (
        select(
            ContributionAttachment.id,
            ContributionAttachment.storage_key,
            ContributionAttachment.content_type,
            ContributionAttachment.size,
            ContributionAttachment.original_name,
            Contribution.user_id,
            Organization.path,
        )
        .join(Contribution, Contribution.id == ContributionAttachment.contribution_id)
        .join(Organization, Organization.id == Contribution.org_id)
        .where(
            ContributionAttachment.id == attachment_id,
            ContributionAttachment.contribution_id == record_id,
        )
    )
    return (await session.execute(stmt)).one_or_none()


async def record_owner_path(session: AsyncSession, record_id: uuid.UUID) -> AnyRow | None:
    stmt = (
        select(Contribution.user_id, Organization.path)
        .join(Organization, Organization.id == Contribution.org_id)
        .where(Contribution.id == record_id)
    )
    return (await session.execute(stmt)).one_or_none()


async def attachments_of(session: AsyncSession, record_id: uuid.UUID) -> Sequence[AnyRow]:
    stmt = (
        select(
            ContributionAttachment.id,
            ContributionAttachment.content_type,
            ContributionAttachment.size,
            ContributionAttachment.sha256,
            ContributionAttachment.original_name,
            ContributionAttachment.created_at,
        )
        .where(ContributionAttachment.contribution_id == record_id)
        .order_by(ContributionAttachment.created_at, ContributionAttachment.id)
    )
    return (await session.execute(stmt)).all()


# --- statistics: aggregates only --------------------------------------------------------------


def _subtree_orgs(path: str) -> Select[uuid.UUID]:
    return select(Organization.id).where(in_subtree(path))


async def prefer_custom_plans(session: AsyncSession) -> None:
    """PostgreSQL: plan the statistics statements for their actual dates and prefix, for the
    rest of this (read-only) transaction.  After five executions of a prepared statement the
    server may otherwise keep a generic plan (measured on a district with 1M records: the
    hours aggregate went from 0.3 s to 2.4 s)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def stats_counts(
    session: AsyncSession, path: str, starts: datetime, ends: datetime, now: datetime
) -> AnyRow:
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
        .where(Contribution.org_id.in_(_subtree_orgs(path)), Contribution.status == PENDING)
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
    return (await session.execute(stmt)).one()


async def stats_hours(
    session: AsyncSession, path: str, first: date, last: date
) -> Sequence[AnyRow]:
    """Approved half-hours and counts per month and post (credits included), grouped in SQL."""
    manual = select(
        Contribution.occurred_on.label("day"),
        Contribution.post,
        Contribution.half_hours.label("hh"),
    ).where(
        Contribution.org_id.in_(_subtree_orgs(path)),
        Contribution.status == APPROVED,
        Contribution.occurred_on.between(first, last),
    )
    credits = select(
        ActivityCredit.occurred_on.label("day"),
        ActivityCredit.post,
        credit_half_hours().label("hh"),
    ).where(
        ActivityCredit.org_id.in_(_subtree_orgs(path)),
        ActivityCredit.status == APPROVED,
        ActivityCredit.occurred_on.between(first, last),
    )
    sub = union_all(manual, credits).subquery()
    month = year_month(sub.c.day)
    stmt = (
        select(
            month.label("month"),
            sub.c.post,
            func.sum(sub.c.hh).label("hh"),
            func.count().label("n"),
        )
        .group_by(month, sub.c.post)
        .order_by(month, sub.c.post)
    )
    return (await session.execute(stmt)).all()


# --- export chunks (keyset pages, each read in a short transaction) ---------------------------

EXPORT_CHUNK = 1000


async def export_contributions(
    session: AsyncSession,
    path: str,
    *,
    status: str | None,
    first: date | None,
    last: date | None,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[AnyRow]:
    manual_where: list[ColumnElement[bool]] = [in_subtree(path)]
    credit_where: list[ColumnElement[bool]] = [in_subtree(path)]
    if first is not None:
        manual_where.append(Contribution.occurred_on >= first)
        credit_where.append(ActivityCredit.occurred_on >= first)
    if last is not None:
        manual_where.append(Contribution.occurred_on <= last)
        credit_where.append(ActivityCredit.occurred_on <= last)
    sub = _records(
        _manual(*manual_where, with_member=True),
        _credits(*credit_where, with_member=True),
        status=status,
    )
    stmt = select(sub)
    if after is not None:
        stmt = stmt.where(
            or_(
                sub.c.created_at > after[0],
                and_(sub.c.created_at == after[0], sub.c.id > after[1]),
            )
        )
    stmt = stmt.order_by(sub.c.created_at, sub.c.id).limit(EXPORT_CHUNK)
    return (await session.execute(stmt)).all()


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


def _after(
    created: Any, ident: Any, after: tuple[datetime, uuid.UUID] | None
) -> ColumnElement[bool]:
    if after is None:
        return true()
    return or_(created > after[0], and_(created == after[0], ident > after[1]))


async def export_members(
    session: AsyncSession, path: str, after: tuple[datetime, uuid.UUID] | None
) -> Sequence[AnyRow]:
    stmt = (
        _EXPORT_MEMBERS.where(in_subtree(path), _after(Checkin.created_at, Checkin.id, after))
        .order_by(Checkin.created_at, Checkin.id)
        .limit(EXPORT_CHUNK)
    )
    return (await session.execute(stmt)).all()


async def export_attendance(
    session: AsyncSession,
    path: str,
    *,
    starts: datetime | None,
    ends: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
) -> Sequence[AnyRow]:
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
        .where(in_subtree(path), _after(Attendance.recorded_at, Attendance.id, after))
    )
    if starts is not None:
        stmt = stmt.where(Activity.starts_at >= starts)
    if ends is not None:
        stmt = stmt.where(Activity.starts_at < ends)
    stmt = stmt.order_by(Attendance.recorded_at, Attendance.id).limit(EXPORT_CHUNK)
    return (await session.execute(stmt)).all()
