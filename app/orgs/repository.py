"""Queries of the organizations module: the directory's column selects (tree order, or near a
point), locking reads, the one-statement rewrite of a subtree's materialized paths, and the
officers of an organization.  Rows leave this module as named tuples."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, Select, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.authz import Scope, in_subtree
from app.core.geo import Near, bounding_box, planar_distance_sq
from app.core.pagination import PageParams, keyset
from app.db.base import utcnow
from app.models.enums import OrgKind
from app.models.organization import Officer, Organization
from app.models.user import User


class OrgRow(NamedTuple):
    """One organization of the directory (a list item)."""

    id: uuid.UUID
    name: str
    kind: str
    level: str | None
    region_type: str | None
    address: str | None
    lat: float | None
    lng: float | None
    parent_id: uuid.UUID | None
    depth: int
    path: str


class ParentRow(NamedTuple):
    id: uuid.UUID
    name: str


class OrgWithParent(NamedTuple):
    org: Organization
    parent: ParentRow | None


class OfficerRow(NamedTuple):
    """An appointment with the name and phone of the person appointed."""

    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone: str
    role: str
    appointed_by: str
    created_at: datetime


@dataclass(frozen=True)
class OrgFilters:
    """The directory's filters; None means "any"."""

    parent_id: uuid.UUID | None = None
    kind: OrgKind | None = None
    region_type: str | None = None
    q: str | None = None


# Statements built once at import; requests only add their filters and bind values.
_LIST_ORGS = select(
    Organization.id,
    Organization.name,
    Organization.kind,
    Organization.level,
    Organization.region_type,
    Organization.address,
    Organization.lat,
    Organization.lng,
    Organization.parent_id,
    Organization.depth,
    Organization.path,
)

_Parent = aliased(Organization, name="parent")
_GET_ORG = select(Organization, _Parent.id, _Parent.name).outerjoin(
    _Parent, _Parent.id == Organization.parent_id
)

_LIST_OFFICERS = select(
    Officer.id,
    Officer.org_id,
    Officer.user_id,
    User.name,
    User.phone,
    Officer.role,
    Officer.appointed_by,
    Officer.created_at,
).join(User, User.id == Officer.user_id)


def _directory(scope: Scope, filters: OrgFilters) -> Select[*tuple[object, ...]]:
    stmt = _LIST_ORGS.where(scope.clause())
    if filters.parent_id is not None:
        stmt = stmt.where(Organization.parent_id == filters.parent_id)
    if filters.kind is not None:
        stmt = stmt.where(Organization.kind == filters.kind)
    if filters.region_type is not None:
        stmt = stmt.where(Organization.region_type == filters.region_type)
    if filters.q:
        stmt = stmt.where(
            func.lower(Organization.name).contains(filters.q.lower(), autoescape=True)
        )
    return stmt


async def orgs_page(
    session: AsyncSession, scope: Scope, filters: OrgFilters, params: PageParams
) -> list[OrgRow]:
    """One page in tree order (materialized path): an organization right before its subtree;
    limit + 1 rows, so that the caller knows whether more follow."""
    stmt = keyset(_directory(scope, filters), [Organization.path], params)
    return [OrgRow._make(row) for row in await session.execute(stmt)]


async def orgs_near(
    session: AsyncSession, scope: Scope, filters: OrgFilters, near: Near, limit: int
) -> list[OrgRow]:
    """At most `limit` organizations in the bounding box around `near`, closest first by the
    planar estimate (the caller ranks them by their exact distance)."""
    # Nullable columns; the box keeps only organizations that have a location.
    lat = Organization.lat
    lng = Organization.lng
    stmt = (
        _directory(scope, filters)
        .where(*bounding_box(lat, lng, near))
        .order_by(planar_distance_sq(lat, lng, near.lat, near.lng), Organization.id)
        .limit(limit)
    )
    return [OrgRow._make(row) for row in await session.execute(stmt)]


async def get_org_with_parent(session: AsyncSession, org_id: uuid.UUID) -> OrgWithParent | None:
    """The organization and its parent's id and name (None for a root), in one query."""
    row = (await session.execute(_GET_ORG.where(Organization.id == org_id))).one_or_none()
    if row is None:
        return None
    org, parent_id, parent_name = row
    parent = ParentRow(parent_id, parent_name) if parent_id and parent_name else None
    return OrgWithParent(org, parent)


async def get_org_locked(
    session: AsyncSession, org_id: uuid.UUID, *, exclusive: bool = False
) -> Organization | None:
    """The organization, re-read and row-locked (FOR SHARE / FOR UPDATE on PostgreSQL; SQLite
    serialises writers with BEGIN IMMEDIATE), so that its path cannot move under us."""
    stmt = (
        select(Organization)
        .where(Organization.id == org_id)
        .with_for_update(read=not exclusive)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def child_kinds(session: AsyncSession, org_id: uuid.UUID) -> set[str]:
    rows = await session.execute(
        select(Organization.kind).where(Organization.parent_id == org_id).distinct()
    )
    return set(rows.scalars())


async def subtree_max_depth(session: AsyncSession, path: str) -> int:
    value = (
        await session.execute(select(func.max(Organization.depth)).where(in_subtree(path)))
    ).scalar_one()
    return int(value)


async def lock_subtree(session: AsyncSession, path: str) -> None:
    """Row-lock every organization of the subtree (PostgreSQL) before its paths change, so
    that a concurrent insert under one of them waits and then sees the new path."""
    await session.execute(select(Organization.id).where(in_subtree(path)).with_for_update())


async def rewrite_subtree_paths(
    session: AsyncSession, old_prefix: str, new_prefix: str, depth_delta: int
) -> int:
    """Replace `old_prefix` by `new_prefix` at the start of every path of the subtree, in ONE
    UPDATE that runs the same on SQLite and PostgreSQL (`||` and `substr`)."""
    new_path: ColumnElement[str] = literal(new_prefix) + func.substr(
        Organization.path, len(old_prefix) + 1
    )
    result = await session.execute(
        update(Organization)
        .where(in_subtree(old_prefix))
        .values(path=new_path, depth=Organization.depth + depth_delta, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def officers_page(
    session: AsyncSession, org_id: uuid.UUID, params: PageParams
) -> list[OfficerRow]:
    """One page of the organization's officers, oldest appointment first; limit + 1 rows."""
    stmt = keyset(
        _LIST_OFFICERS.where(Officer.org_id == org_id),
        [Officer.created_at, Officer.id],
        params,
    )
    return [OfficerRow._make(row) for row in await session.execute(stmt)]


async def officer_row(session: AsyncSession, officer_id: uuid.UUID) -> OfficerRow:
    """The appointment as the officers list shows it."""
    row = (await session.execute(_LIST_OFFICERS.where(Officer.id == officer_id))).one()
    return OfficerRow._make(row)


async def get_officer(
    session: AsyncSession, org_id: uuid.UUID, officer_id: uuid.UUID
) -> Officer | None:
    stmt = select(Officer).where(Officer.id == officer_id, Officer.org_id == org_id)
    return (await session.execute(stmt)).scalar_one_or_none()
