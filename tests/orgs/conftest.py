"""Helpers of the orgs tests (the tree is the suite's own: tests/fixtures/orgs.py)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.organization import Organization


async def count_orgs(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(Organization))).scalar_one())


async def fresh(db: AsyncSession, org: Organization) -> Organization:
    """The row as the database holds it now (not the factory's cached object)."""
    found = (
        await db.execute(
            select(Organization)
            .where(Organization.id == org.id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return found
