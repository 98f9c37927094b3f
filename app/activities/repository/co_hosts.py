"""Co-host invitations as the invited organization's officers see them: a page of an
organization's invitations, one of them, and the conditional UPDATE that decides one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.pagination import PageParams, keyset
from app.models.activity import Activity, ActivityStatus, CoHostStatus, activity_co_hosts
from app.models.organization import Organization

# An invitation is decided only while its activity may still take place.
OPEN = (ActivityStatus.draft.value, ActivityStatus.published.value)

_C = activity_co_hosts.c


class InvitationRow(NamedTuple):
    activity_id: uuid.UUID
    org_id: uuid.UUID
    status: str
    title: str
    host_id: uuid.UUID
    host_name: str
    starts_at: datetime
    ends_at: datetime
    visibility: str
    activity_status: str
    created_at: datetime
    invited_by: uuid.UUID | None
    decided_at: datetime | None
    decided_by: uuid.UUID | None


_INVITATIONS: Any = (
    select(
        _C.activity_id,
        _C.org_id,
        _C.status,
        Activity.title,
        Organization.id.label("host_id"),
        Organization.name.label("host_name"),
        Activity.starts_at,
        Activity.ends_at,
        Activity.visibility,
        Activity.status.label("activity_status"),
        _C.created_at,
        _C.invited_by,
        _C.decided_at,
        _C.decided_by,
    )
    .join(Activity, Activity.id == _C.activity_id)
    .join(Organization, Organization.id == Activity.org_id)
)


def cursor_key(row: InvitationRow) -> tuple[datetime, uuid.UUID]:
    return row.created_at, row.activity_id


async def invitations_page(
    session: AsyncSession, org_id: uuid.UUID, status: str | None, params: PageParams
) -> list[InvitationRow]:
    """The organization's co-host invitations, oldest first, by
    ix_activity_co_hosts_org_status_created (org_id, status, created_at, activity_id)."""
    where: list[ColumnElement[bool]] = [_C.org_id == org_id]
    if status is not None:
        where.append(_C.status == status)
    keys = cast(list[InstrumentedAttribute[Any]], [_C.created_at, _C.activity_id])
    stmt = keyset(_INVITATIONS.where(*where), keys, params)
    return [InvitationRow(**r._mapping) for r in await session.execute(stmt)]


async def invitation(
    session: AsyncSession, activity_id: uuid.UUID, org_id: uuid.UUID
) -> InvitationRow | None:
    stmt = _INVITATIONS.where(_C.activity_id == activity_id, _C.org_id == org_id)
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else InvitationRow(**row._mapping)


async def decide(
    session: AsyncSession,
    activity_id: uuid.UUID,
    org_id: uuid.UUID,
    *,
    to_status: CoHostStatus,
    actor_id: uuid.UUID,
    now: datetime,
) -> bool:
    """One conditional UPDATE: the pending invitation of an activity still open; False when
    there is none (unknown, already decided, or the activity is over)."""
    stmt = (
        update(activity_co_hosts)
        .where(
            _C.activity_id == activity_id,
            _C.org_id == org_id,
            _C.status == CoHostStatus.pending.value,
            exists().where(Activity.id == _C.activity_id, Activity.status.in_(OPEN)),
        )
        .values(status=to_status.value, decided_by=actor_id, decided_at=now)
        .returning(_C.activity_id)
    )
    return (await session.execute(stmt)).first() is not None
