"""One activity loaded for the act at hand; whether the caller may is decided by the policy
in `app.authz.activities`, never here."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository import activities as repo
from app.authz import Principal
from app.authz import activities as policy
from app.core.errors import NotFound
from app.models.activity import Activity


async def for_officer(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID, *, lock: bool = False
) -> Activity:
    """The activity, when the caller runs it (an officer of its host or above); with `lock`
    its row is held until the transaction ends."""
    found = await repo.get_hosted(session, activity_id, lock=lock)
    if found is None:
        raise NotFound()
    await policy.require_runs(session, principal, found.activity, found.host_path)
    return found.activity


async def for_member(session: AsyncSession, activity_id: uuid.UUID) -> Activity:
    """A published (or later) activity: a draft or an unknown id is a 404."""
    return policy.require_announced(await repo.get(session, activity_id))
