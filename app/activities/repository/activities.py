"""One activity: the row with its host's path, and its co-hosts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.activity import Activity, activity_co_hosts
from app.models.organization import Organization


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


async def host_path(session: AsyncSession, org_id: uuid.UUID) -> str | None:
    """The path of a would-be host, or None when there is no such organization."""
    stmt = select(Organization.path).where(Organization.id == org_id)
    return (await session.execute(stmt)).scalar_one_or_none()
