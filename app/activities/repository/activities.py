"""One activity: the row with its host's path, and its co-hosts (named by the host, accepted or
still invited)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.activity import Activity, CoHostStatus, activity_co_hosts
from app.models.organization import Organization

ACCEPTED = CoHostStatus.accepted.value
PENDING = CoHostStatus.pending.value


class Hosted(NamedTuple):
    """An activity and the materialized path of its host (what access is decided on)."""

    activity: Activity
    host_path: str


async def get_hosted(
    session: AsyncSession, activity_id: uuid.UUID, *, lock: bool = False
) -> Hosted | None:
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
    return None if row is None else Hosted(row[0], row[1])


async def get(session: AsyncSession, activity_id: uuid.UUID) -> Activity | None:
    return await session.get(Activity, activity_id)


class CoHost(NamedTuple):
    org_id: uuid.UUID
    status: str


async def co_hosts(session: AsyncSession, activity_id: uuid.UUID) -> list[CoHost]:
    """Every co-host the host named, with where its invitation stands."""
    stmt = (
        select(activity_co_hosts.c.org_id, activity_co_hosts.c.status)
        .where(activity_co_hosts.c.activity_id == activity_id)
        .order_by(activity_co_hosts.c.org_id)
    )
    return [CoHost(*row) for row in await session.execute(stmt)]


async def co_host_ids(session: AsyncSession, activity_id: uuid.UUID) -> list[uuid.UUID]:
    """The co-hosts in effect: those that accepted (they open the activity to members)."""
    return [c.org_id for c in await co_hosts(session, activity_id) if c.status == ACCEPTED]


async def set_co_hosts(
    session: AsyncSession,
    activity_id: uuid.UUID,
    org_ids: Sequence[uuid.UUID],
    *,
    accepted: set[uuid.UUID],
    actor_id: uuid.UUID | None,
    now: datetime,
) -> list[uuid.UUID]:
    """Make the named co-hosts `org_ids`: drop the others, keep where the named ones stand,
    add the new ones, `accepted` at once or invited (pending).  The newly invited ones."""
    drop = delete(activity_co_hosts).where(activity_co_hosts.c.activity_id == activity_id)
    if org_ids:
        drop = drop.where(activity_co_hosts.c.org_id.not_in(org_ids))
    await session.execute(drop)
    present = {c.org_id for c in await co_hosts(session, activity_id)}
    new = [org for org in org_ids if org not in present]
    if new:
        await session.execute(
            insert(activity_co_hosts),
            [
                {
                    "activity_id": activity_id,
                    "org_id": org,
                    "status": ACCEPTED if org in accepted else PENDING,
                    "invited_by": actor_id,
                    "created_at": now,
                    "decided_by": actor_id if org in accepted else None,
                    "decided_at": now if org in accepted else None,
                }
                for org in new
            ],
        )
    return [org for org in new if org not in accepted]


async def org_paths(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The paths of those of `ids` that exist."""
    if not ids:
        return {}
    stmt = select(Organization.id, Organization.path).where(Organization.id.in_(ids))
    return {row[0]: row[1] for row in await session.execute(stmt)}


async def host_path(session: AsyncSession, org_id: uuid.UUID) -> str | None:
    """The path of a would-be host, or None when there is no such organization."""
    stmt = select(Organization.path).where(Organization.id == org_id)
    return (await session.execute(stmt)).scalar_one_or_none()
