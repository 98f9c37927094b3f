"""Questions about the organization tree that several domains ask."""

from __future__ import annotations

import uuid
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import ancestor_ids
from app.models.enums import OrgKind
from app.models.organization import Organization


def child_path(parent_path: str | None, org_id: uuid.UUID) -> str:
    """The materialized path of organization `org_id` placed under the one at `parent_path`
    ("/<id>/.../<parent id>/<org id>/"), or at the root of a tree of its own when None."""
    return (parent_path or "/") + org_id.hex + "/"


class District(NamedTuple):
    id: uuid.UUID
    path: str


async def district_of(session: AsyncSession, org_path: str) -> District:
    """The nearest organization of kind district at or above the one at `org_path` (its
    area); in a tree without a district, the root of that tree."""
    chain = ancestor_ids(org_path)
    found = (
        await session.execute(
            select(Organization.id, Organization.path)
            .where(Organization.id.in_(chain), Organization.kind == OrgKind.district)
            .order_by(Organization.depth.desc())
            .limit(1)
        )
    ).one_or_none()
    if found is not None:
        return District(found.id, found.path)
    return District(chain[0], f"/{chain[0].hex}/")
