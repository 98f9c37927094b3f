"""The union of records: manual contributions and activity credits read as one list.

Activity credits (ActivityCredit, owned by the activities module) are read here, never copied:
every member-facing and officer-facing read of records (and the contributions export) is a
UNION ALL of `contributions` and `activity_credits` (with their activity's title and category)
shaped to the same columns, `RecordRow`, with each branch filtered before the union so that
both use their own indexes.  These functions build statements; the repositories run them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Integer,
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
    null,
    or_,
    select,
    union_all,
)

from app.core.pagination import PageParams, decode_cursor
from app.models.activity import Activity, ActivityCredit
from app.models.contribution import Contribution, ContributionSource, ContributionStatus
from app.models.organization import Organization
from app.models.user import User

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"

APPROVED = ContributionStatus.approved.value
PENDING = ContributionStatus.pending.value


class RecordRow(NamedTuple):
    """One record of the union, as both branches shape it."""

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
    possible_duplicate: bool
    submitted_at: datetime
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    decision_comment: str | None
    user_id: uuid.UUID
    created_at: datetime
    # The row version of a manual record (its ETag); None for a credit, never decided.
    version: int | None


class Keyed(Protocol):
    """A row ordered by (created_at, id), the keyset of every list of records."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def created_at(self) -> datetime: ...


def cursor_key(row: Keyed) -> tuple[datetime, uuid.UUID]:
    return row.created_at, row.id


def credit_half_hours() -> ColumnElement[int]:
    return cast(func.round(ActivityCredit.hours * 2), Integer)


def manual(*where: ColumnElement[bool], with_member: bool = False) -> AnySelect:
    """The manual branch: `RecordRow`'s columns (plus the member's name and phone)."""
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
        Contribution.version,
    ]
    stmt = select(*columns).join(Organization, Organization.id == Contribution.org_id)
    if with_member:
        stmt = stmt.add_columns(User.name.label("user_name"), User.phone.label("user_phone")).join(
            User, User.id == Contribution.user_id
        )
    return stmt.where(*where)


def credits(*where: ColumnElement[bool], with_member: bool = False) -> AnySelect:
    """The credit branch (approved credits only), shaped like the manual one."""
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
        cast(null(), Integer).label("version"),
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


def union(manual: AnySelect, credits: AnySelect | None, *, status: str | None) -> Any:
    """Both branches as one subquery, unless the status filter excludes credits (they are all
    approved)."""
    if status is not None:
        manual = manual.where(Contribution.status == status)
    if credits is None or status not in (None, APPROVED):
        return manual.subquery("records")
    return union_all(manual, credits).subquery("records")


def page(
    sub: Any, params: PageParams | None, *, descending: bool, limit: int | None = None
) -> AnySelect:
    """Keyset over (created_at, id) of a union subquery."""
    created, ident = sub.c.created_at, sub.c.id
    stmt: AnySelect = select(sub)
    if params is not None and params.cursor is not None:
        at, last = decode_cursor(params.cursor, (datetime, uuid.UUID))
        if descending:
            stmt = stmt.where(or_(created < at, and_(created == at, ident < last)))
        else:
            stmt = stmt.where(or_(created > at, and_(created == at, ident > last)))
    order = [created.desc(), ident.desc()] if descending else [created.asc(), ident.asc()]
    size = params.limit + 1 if params is not None else limit
    return stmt.order_by(*order).limit(size)


def with_duplicate_hint(page: Any) -> AnySelect:
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
