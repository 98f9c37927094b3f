"""Queries of the organizations module: column selects for lists, locking reads, and the
one-statement rewrite of a subtree's materialized paths."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.db.base import utcnow
from app.models.organization import Officer, Organization
from app.models.user import User

# Statements built once at import; requests only add their filters and bind values.
LIST_ORGS = select(
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
GET_ORG = select(Organization, _Parent.id, _Parent.name).outerjoin(
    _Parent, _Parent.id == Organization.parent_id
)

LIST_OFFICERS = select(
    Officer.id,
    Officer.org_id,
    Officer.user_id,
    User.name,
    User.phone,
    Officer.role,
    Officer.appointed_by,
    Officer.created_at,
).join(User, User.id == Officer.user_id)


async def get_org_with_parent(
    session: AsyncSession, org_id: uuid.UUID
) -> tuple[Organization, uuid.UUID | None, str | None] | None:
    """The organization and its parent's id and name (None for a root), in one query."""
    row = (await session.execute(GET_ORG.where(Organization.id == org_id))).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


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
        await session.execute(select(func.max(Organization.depth)).where(_in_subtree(path)))
    ).scalar_one()
    return int(value)


async def lock_subtree(session: AsyncSession, path: str) -> None:
    """Row-lock every organization of the subtree (PostgreSQL) before its paths change, so
    that a concurrent insert under one of them waits and then sees the new path."""
    await session.execute(select(Organization.id).where(_in_subtree(path)).with_for_update())


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
        .where(_in_subtree(old_prefix))
        .values(path=new_path, depth=Organization.depth + depth_delta, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def get_officer(
    session: AsyncSession, org_id: uuid.UUID, officer_id: uuid.UUID
) -> Officer | None:
    stmt = select(Officer).where(Officer.id == officer_id, Officer.org_id == org_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def fetch(session: AsyncSession, stmt: Select[*tuple[Any, ...]]) -> Sequence[Row[Any]]:
    result: Sequence[Row[Any]] = (await session.execute(stmt)).all()
    return result


def _in_subtree(path: str) -> ColumnElement[bool]:
    return Organization.path.startswith(path, autoescape=True)
