"""Scopes: the subtrees of the organization tree a principal may act on, and the decisions
that follow from them (404 for what does not exist, 403 for what lies outside).

- an admin acts everywhere;
- an officer (secretary, deputy, worker) of an organization acts on it and its whole subtree;
- a city-system client acts by its scopes, on the whole city or on the subtree it is bound to;
- a member acts on their own records (fetched by id *and* owner: someone else's is a 404).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz.principal import Principal
from app.authz.tree import in_subtree, path_within
from app.core.errors import Forbidden, NotFound
from app.models.organization import Officer, Organization


@dataclass(frozen=True)
class Scope:
    """The subtrees a principal may act on: everything, or the given path prefixes."""

    everything: bool
    prefixes: tuple[str, ...]

    def covers_path(self, path: str) -> bool:
        return self.everything or any(path_within(path, p) for p in self.prefixes)

    def covers_strictly_above(self, path: str) -> bool:
        """True when the scope reaches `path` from a *strict* ancestor ("officer above"):
        an officer of the organization itself, and nobody else, does not qualify."""
        return self.everything or any(
            path_within(path, p) and len(p) < len(path) for p in self.prefixes
        )

    def clause(self, path_column: ColumnElement[str] | None = None) -> ColumnElement[bool]:
        """A WHERE clause restricting organizations (by their path) to this scope."""
        if self.everything:
            return true()
        if not self.prefixes:
            return false()
        return or_(*(in_subtree(p, path_column) for p in self.prefixes))

    @property
    def empty(self) -> bool:
        return not self.everything and not self.prefixes


ORGS_READ = "orgs:read"

NOTHING = Scope(everything=False, prefixes=())
EVERYTHING = Scope(everything=True, prefixes=())


def subtree(path: str) -> Scope:
    """The scope of one organization's subtree."""
    return Scope(everything=False, prefixes=(path,))


def _minimal(paths: list[str]) -> tuple[str, ...]:
    """Drop prefixes covered by a shorter one."""
    kept: list[str] = []
    for path in sorted(paths, key=len):
        if not any(path_within(path, k) for k in kept):
            kept.append(path)
    return tuple(kept)


async def officer_scope(session: AsyncSession, principal: Principal) -> Scope:
    """Where a member acts as an officer (or everything for an admin)."""
    if principal.is_admin:
        return EVERYTHING
    if principal.user is None:
        return NOTHING
    paths = (
        await session.execute(
            select(Organization.path)
            .join(Officer, Officer.org_id == Organization.id)
            .where(Officer.user_id == principal.user.id)
        )
    ).scalars()
    return Scope(everything=False, prefixes=_minimal(list(paths)))


async def client_scope(session: AsyncSession, principal: Principal, needed: str) -> Scope:
    """Where a city client holding scope `needed` may read."""
    client = principal.client
    if client is None or needed not in principal.scopes:
        return NOTHING
    if client.org_id is None:
        return EVERYTHING
    path = (
        await session.execute(select(Organization.path).where(Organization.id == client.org_id))
    ).scalar_one_or_none()
    return NOTHING if path is None else subtree(path)


async def scope_for(session: AsyncSession, principal: Principal, client_scope_name: str) -> Scope:
    """Officer scope for people, `client_scope_name` scope for city systems."""
    if principal.client is not None:
        return await client_scope(session, principal, client_scope_name)
    return await officer_scope(session, principal)


async def officer_scope_required(session: AsyncSession, principal: Principal) -> Scope:
    """The caller's officer scope; 403 for someone who is an officer nowhere."""
    scope = await officer_scope(session, principal)
    if scope.empty:
        raise Forbidden()
    return scope


async def load_org_in_scope(session: AsyncSession, org_id: uuid.UUID, scope: Scope) -> Organization:
    """The organization if the scope covers it; 404 when it does not exist, 403 when the caller
    is an officer somewhere but not here (a plain member gets 403 too: orgs are public)."""
    org = await session.get(Organization, org_id)
    if org is None:
        raise NotFound()
    if not scope.covers_path(org.path):
        raise Forbidden()
    return org


async def require_officer_of(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, client_scope_name: str = ""
) -> Organization:
    """The organization `org_id` for an officer of it or above (or a client holding
    `client_scope_name` over it)."""
    scope = await scope_for(session, principal, client_scope_name or "-")
    return await load_org_in_scope(session, org_id, scope)


async def directory_scope(session: AsyncSession, principal: Principal) -> Scope:
    """Where the caller may *read* the organization directory.

    The directory is public to every signed-in person; a city client needs `orgs:read`
    (403 `scope_missing` without it) and then reads the city or the subtree it is bound to.
    """
    if principal.client is None:
        return EVERYTHING
    require_scope(principal, ORGS_READ)
    return await client_scope(session, principal, ORGS_READ)


async def require_officer_above(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID
) -> Organization:
    """For acts reserved to an officer of a strict ancestor (or an admin), such as
    appointing or removing the officers of `org_id`.  404 when it does not exist, 403 when
    the caller is not above it (its own officers included)."""
    scope = await officer_scope(session, principal)
    org = await session.get(Organization, org_id)
    if org is None:
        raise NotFound()
    if not scope.covers_strictly_above(org.path):
        raise Forbidden()
    return org


def require_owner_or_officer(
    actor_id: uuid.UUID, scope: Scope, *, owner_id: uuid.UUID, org_path: str
) -> None:
    """For reading a member's object (a record and its evidence): its member, or an officer
    whose `scope` covers its organization at `org_path`.  404 for anyone else, as for an
    unknown id."""
    if owner_id != actor_id and not scope.covers_path(org_path):
        raise NotFound()


def require_scope(principal: Principal, needed: str) -> None:
    """403 `scope_missing` for a city client without `needed`; people pass."""
    if principal.client is not None and needed not in principal.scopes:
        raise Forbidden("scope_missing")


def require_member(principal: Principal) -> None:
    """403 `members_only` for a city client."""
    if principal.user is None:
        raise Forbidden("members_only")


def require_covers(scope: Scope, path: str) -> None:
    """403 unless the scope covers the organization at `path`, one already known to exist
    (a parent named in a request, an organization re-read under a lock)."""
    if not scope.covers_path(path):
        raise Forbidden()


def require_whole_tree(scope: Scope) -> None:
    """403 unless the scope is the whole tree (an admin's): founding a root organization,
    or making one of an existing organization."""
    if not scope.everything:
        raise Forbidden()
