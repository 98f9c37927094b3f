"""Officers read the approved members (registrations) of their subtree, personal data
masked."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.checkins import repository as repo
from app.checkins.schemas import MemberRead
from app.checkins.shaping import member
from app.core.pagination import Page, PageParams, page_of
from app.models.organization import Organization


async def members(
    session: AsyncSession,
    org: Organization,
    *,
    floating: bool | None,
    q: str | None,
    params: PageParams,
) -> Page[MemberRead]:
    q = (q or "").strip() or None
    rows = await repo.members_page(session, org.path, floating=floating, q=q, params=params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[member(r) for r in items], next_cursor=cursor)
