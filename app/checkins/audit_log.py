"""Officers read the audit log of their subtree's organizations (every kind of entry, not
only check-ins), newest first."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.checkins import repository as repo
from app.checkins.schemas import AuditEntryRead
from app.checkins.shaping import audit_entry
from app.core.pagination import Page, PageParams, page_of
from app.models.organization import Organization


async def audit_log(
    session: AsyncSession,
    org: Organization,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    params: PageParams,
) -> Page[AuditEntryRead]:
    rows = await repo.audit_page(session, org.path, action=action, actor_id=actor_id, params=params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[audit_entry(r) for r in items], next_cursor=cursor)
