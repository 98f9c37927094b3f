"""The SQL of check-ins: list pages that select only the columns they return, as typed rows,
and the look-ups behind the rules.  (State changes go through the review mechanism's
conditional UPDATE, app/review/decisions.py.)

List statements are built once at import; a request only adds its filters and keyset bounds.
Each statement's column labels are the fields of its row type, checked when a row is built.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeAlias

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.authz import in_subtree
from app.core.pagination import PageParams, keyset
from app.models.checkin import Checkin
from app.models.enums import CheckinStatus
from app.models.kit import AuditLog
from app.models.organization import Organization
from app.models.user import User

ACTIVE_UNIQUE_INDEX = "uq_checkins_active_user_org"

AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"

_RecordOrg = aliased(Organization, name="record_org")
_Actor = aliased(User, name="actor")


class Keyed(Protocol):
    """A row of a list ordered by (created_at, id)."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def created_at(self) -> datetime: ...


def cursor_key(row: Keyed) -> tuple[datetime, uuid.UUID]:
    return row.created_at, row.id


# --- look-ups ---------------------------------------------------------------------------


async def get_org(session: AsyncSession, org_id: uuid.UUID) -> Organization | None:
    return await session.get(Organization, org_id)


async def org_path(session: AsyncSession, org_id: uuid.UUID) -> str | None:
    return (
        await session.execute(select(Organization.path).where(Organization.id == org_id))
    ).scalar_one_or_none()


def is_active_duplicate(exc: IntegrityError) -> bool:
    """Whether the error is the partial unique index on (user, org) of active check-ins.

    PostgreSQL names the index; SQLite names the columns."""
    message = str(exc.orig)
    return ACTIVE_UNIQUE_INDEX in message or "checkins.user_id, checkins.org_id" in message


# --- the member's own check-ins ------------------------------------------------------------


class CheckinRow(NamedTuple):
    """A check-in with its organization: what the member sees."""

    id: uuid.UUID
    status: str
    note: str | None
    floating: bool
    created_at: datetime
    decided_at: datetime | None
    decision_comment: str | None
    ended_at: datetime | None
    org_id: uuid.UUID
    org_name: str
    org_kind: str


_MINE: AnySelect = select(
    Checkin.id,
    Checkin.status,
    Checkin.note,
    Checkin.floating,
    Checkin.created_at,
    Checkin.decided_at,
    Checkin.decision_comment,
    Checkin.ended_at,
    Organization.id.label("org_id"),
    Organization.name.label("org_name"),
    Organization.kind.label("org_kind"),
).join(Organization, Organization.id == Checkin.org_id)


async def mine_page(
    session: AsyncSession, user_id: uuid.UUID, params: PageParams
) -> list[CheckinRow]:
    stmt: AnySelect = keyset(
        _MINE.where(Checkin.user_id == user_id),
        [Checkin.created_at, Checkin.id],
        params,
        descending=True,
    )
    return [CheckinRow(**r._mapping) for r in await session.execute(stmt)]


async def mine_one(
    session: AsyncSession, checkin_id: uuid.UUID, user_id: uuid.UUID
) -> CheckinRow | None:
    stmt = _MINE.where(Checkin.id == checkin_id, Checkin.user_id == user_id)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else CheckinRow(**row._mapping)


# --- officers' queue ----------------------------------------------------------------------


class QueueRow(NamedTuple):
    """A check-in as an officer reviews it: the member's view, the member and the decider."""

    id: uuid.UUID
    status: str
    note: str | None
    floating: bool
    created_at: datetime
    decided_at: datetime | None
    decided_by: uuid.UUID | None
    decision_comment: str | None
    ended_at: datetime | None
    org_id: uuid.UUID
    org_name: str
    org_kind: str
    user_id: uuid.UUID
    user_name: str
    user_phone: str
    user_party_status: str | None
    user_employer: str | None
    record_org_id: uuid.UUID | None
    record_org_name: str | None
    version: int
    user_version: int


_QUEUE: AnySelect = (
    select(
        Checkin.id,
        Checkin.status,
        Checkin.note,
        Checkin.floating,
        Checkin.created_at,
        Checkin.decided_at,
        Checkin.decided_by,
        Checkin.decision_comment,
        Checkin.ended_at,
        Organization.id.label("org_id"),
        Organization.name.label("org_name"),
        Organization.kind.label("org_kind"),
        User.id.label("user_id"),
        User.name.label("user_name"),
        User.phone.label("user_phone"),
        User.party_status.label("user_party_status"),
        User.employer.label("user_employer"),
        User.record_org_id.label("record_org_id"),
        func.coalesce(_RecordOrg.name, User.record_org_name).label("record_org_name"),
        Checkin.version,
        User.version.label("user_version"),
    )
    .join(Organization, Organization.id == Checkin.org_id)
    .join(User, User.id == Checkin.user_id)
    .outerjoin(_RecordOrg, _RecordOrg.id == User.record_org_id)
)


async def queue_page(
    session: AsyncSession, path: str, status: CheckinStatus | None, params: PageParams
) -> list[QueueRow]:
    """Check-ins of the subtree at `path`, oldest first (a queue is worked in order).

    The planner walks the subtree's organizations by the path index and each one's check-ins
    by ix_checkins_org_status_created (org_id, status, created_at, id)."""
    stmt = _QUEUE.where(in_subtree(path))
    if status is not None:
        stmt = stmt.where(Checkin.status == status)
    stmt = keyset(stmt, [Checkin.created_at, Checkin.id], params)
    return [QueueRow(**r._mapping) for r in await session.execute(stmt)]


async def queue_one(session: AsyncSession, checkin_id: uuid.UUID) -> QueueRow | None:
    row = (await session.execute(_QUEUE.where(Checkin.id == checkin_id))).one_or_none()
    return None if row is None else QueueRow(**row._mapping)


# --- approved members -----------------------------------------------------------------------


class MemberRow(NamedTuple):
    """An approved registration with the member's (unmasked) details."""

    id: uuid.UUID
    floating: bool
    created_at: datetime
    decided_at: datetime | None
    org_id: uuid.UUID
    org_name: str
    org_kind: str
    user_id: uuid.UUID
    user_name: str
    user_phone: str
    user_id_number_masked: str | None
    user_gender: str | None
    user_party_status: str | None
    user_employer: str | None
    user_post_title: str | None
    record_org_id: uuid.UUID | None
    record_org_name: str | None


_MEMBERS: AnySelect = (
    select(
        Checkin.id,
        Checkin.floating,
        Checkin.created_at,
        Checkin.decided_at,
        Organization.id.label("org_id"),
        Organization.name.label("org_name"),
        Organization.kind.label("org_kind"),
        User.id.label("user_id"),
        User.name.label("user_name"),
        User.phone.label("user_phone"),
        User.id_number_masked.label("user_id_number_masked"),
        User.gender.label("user_gender"),
        User.party_status.label("user_party_status"),
        User.employer.label("user_employer"),
        User.post_title.label("user_post_title"),
        User.record_org_id.label("record_org_id"),
        func.coalesce(_RecordOrg.name, User.record_org_name).label("record_org_name"),
    )
    .join(Organization, Organization.id == Checkin.org_id)
    .join(User, User.id == Checkin.user_id)
    .outerjoin(_RecordOrg, _RecordOrg.id == User.record_org_id)
    .where(Checkin.status == CheckinStatus.approved)
)


async def members_page(
    session: AsyncSession,
    path: str,
    *,
    floating: bool | None,
    q: str | None,
    params: PageParams,
) -> list[MemberRow]:
    """Approved registrations of the subtree, newest first; by ix_checkins_org_status_created
    (org_id, status, created_at, id), or ix_checkins_org_status_floating (org_id, status,
    floating, created_at, id) when filtered on floating.  `q` (name contains, LIKE '%…%')
    has no btree to use: it narrows the subtree's approved rows the indexes already found."""
    stmt = _MEMBERS.where(in_subtree(path))
    if floating is not None:
        stmt = stmt.where(Checkin.floating == floating)
    if q:
        stmt = stmt.where(User.name.contains(q, autoescape=True))
    stmt = keyset(stmt, [Checkin.created_at, Checkin.id], params, descending=True)
    return [MemberRow(**r._mapping) for r in await session.execute(stmt)]


# --- audit log ------------------------------------------------------------------------------


class AuditRow(NamedTuple):
    """An audit entry with its organization and the acting person's name."""

    id: uuid.UUID
    created_at: datetime
    action: str
    object_type: str
    object_id: str | None
    actor_id: uuid.UUID | None
    actor_client_id: str | None
    from_state: str | None
    to_state: str | None
    comment: str | None
    org_id: uuid.UUID
    org_name: str
    org_kind: str
    actor_name: str | None


_AUDIT: AnySelect = (
    select(
        AuditLog.id,
        AuditLog.created_at,
        AuditLog.action,
        AuditLog.object_type,
        AuditLog.object_id,
        AuditLog.actor_id,
        AuditLog.actor_client_id,
        AuditLog.from_state,
        AuditLog.to_state,
        AuditLog.comment,
        Organization.id.label("org_id"),
        Organization.name.label("org_name"),
        Organization.kind.label("org_kind"),
        _Actor.name.label("actor_name"),
    )
    .join(Organization, Organization.id == AuditLog.org_id)
    .outerjoin(_Actor, _Actor.id == AuditLog.actor_id)
)


async def audit_page(
    session: AsyncSession,
    path: str,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    params: PageParams,
) -> list[AuditRow]:
    """Audit entries of the subtree's organizations, newest first.  Without a filter, per
    organization by ix_audit_log_org_created (org_id, created_at, id).  With `action` or
    `actor_id`: a small subtree per organization by ix_audit_log_org_{action,actor}_created
    (org_id, filter, created_at, id); a large one newest first by
    ix_audit_log_{action,actor}_created (filter, created_at, id), stopping at the page size
    (measured on PostgreSQL, 300k entries under 20k organizations: a district-wide action
    filter from an 88 ms sequential scan to 0.2 ms)."""
    stmt = _AUDIT.where(in_subtree(path))
    if action is not None:
        stmt = stmt.where(AuditLog.action == action)
    if actor_id is not None:
        stmt = stmt.where(AuditLog.actor_id == actor_id)
    stmt = keyset(stmt, [AuditLog.created_at, AuditLog.id], params, descending=True)
    return [AuditRow(**r._mapping) for r in await session.execute(stmt)]
