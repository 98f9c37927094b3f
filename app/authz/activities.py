"""Who may see an activity, and who may run it.

- Officers of the host or of any organization above it (and admins) run an activity: they
  create, edit, publish, cancel and complete it, read its roster and record attendance, and
  see it in every status, drafts included.
- A member sees an activity once it is no longer a draft, by its visibility:
  `public` everyone signed in; `region` whoever belongs anywhere in the host's district;
  `org` whoever belongs to the host or an accepted co-host or to an organization below one of
  them.
- Co-hosts: an officer names co-host organizations.  Those the officer acts for (their own
  subtree; everything for an admin) co-host at once; any other is invited, and opens the
  activity to its members only once an officer of it (or above it) accepts — so that no
  officer can push an activity into another organization's subtree.
  To *belong* to an organization is to hold an approved check-in there or to serve it as an
  officer (a secretary belongs to the organization they run without checking in to it).
- Signing up needs the same: an activity a member does not reach is refused with 403
  `not_registered`.
- A draft is nobody's business but its officers': everyone else gets 404 for it, so that ids
  do not tell what is being prepared.  For a visible activity, an officer's act by someone
  who does not run it is a 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, exists, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz.principal import Principal
from app.authz.scope import officer_scope
from app.authz.tree import ancestor_ids
from app.core.errors import AppError, Forbidden, NotFound, register_codes
from app.models.activity import (
    Activity,
    ActivityStatus,
    CoHostStatus,
    Visibility,
    activity_co_hosts,
)
from app.models.checkin import Checkin
from app.models.enums import CheckinStatus
from app.models.organization import Officer, Organization

register_codes(
    {
        "not_registered": (
            403,
            "您未在主办组织登记报到，不能报名",
            "You are not registered with an organization this activity is open to",
        ),
    }
)

DRAFT = ActivityStatus.draft.value


@dataclass(frozen=True)
class Belonging:
    """Every organization at or above one the member belongs to.

    "Belongs somewhere in the subtree of X" is then "X is among `org_ids`", an equality test
    that the indexes on activities serve directly.
    """

    org_ids: frozenset[uuid.UUID]


# Where a member belongs: approved check-ins, and the organizations they serve as an officer.
_BELONGS_AT = union_all(
    select(Organization.path)
    .join(Checkin, Checkin.org_id == Organization.id)
    .where(
        Checkin.user_id == bindparam("me"),
        Checkin.status == CheckinStatus.approved.value,
    ),
    select(Organization.path)
    .join(Officer, Officer.org_id == Organization.id)
    .where(Officer.user_id == bindparam("me")),
)


async def belonging_of(session: AsyncSession, principal: Principal) -> Belonging:
    """Where the signed-in person belongs (one query)."""
    paths = (await session.execute(_BELONGS_AT, {"me": principal.person.id})).scalars()
    return Belonging(frozenset(org for path in paths for org in ancestor_ids(path)))


def visible_clause(belonging: Belonging) -> ColumnElement[bool]:
    """WHERE clause on `Activity`: the activities whose visibility reaches the member (the
    caller adds the statuses it lists)."""
    public = Activity.visibility == Visibility.public.value
    if not belonging.org_ids:
        return public
    ids = sorted(belonging.org_ids)
    co_hosted = exists().where(
        activity_co_hosts.c.activity_id == Activity.id,
        activity_co_hosts.c.org_id.in_(ids),
        activity_co_hosts.c.status == CoHostStatus.accepted.value,
    )
    return or_(
        public,
        and_(Activity.visibility == Visibility.region.value, Activity.district_id.in_(ids)),
        and_(
            Activity.visibility == Visibility.org.value,
            or_(Activity.org_id.in_(ids), co_hosted),
        ),
    )


def reaches(activity: Activity, co_hosts: Iterable[uuid.UUID], belonging: Belonging) -> bool:
    """The rule of `visible_clause`, for one loaded activity and its accepted co-hosts."""
    if activity.visibility == Visibility.public.value:
        return True
    if activity.visibility == Visibility.region.value:
        return activity.district_id in belonging.org_ids
    return activity.org_id in belonging.org_ids or any(org in belonging.org_ids for org in co_hosts)


def require_announced(activity: Activity | None) -> Activity:
    """The activity, unless it does not exist or is still a draft (404 for both: members
    act only on activities that have been published)."""
    if activity is None or activity.status == DRAFT:
        raise NotFound()
    return activity


async def acts_for(
    session: AsyncSession, principal: Principal, paths: Mapping[uuid.UUID, str]
) -> set[uuid.UUID]:
    """Those of the organizations (id → path) the caller acts for as an officer (of it or
    above it): named as co-hosts by this caller, they co-host at once."""
    scope = await officer_scope(session, principal)
    return {org for org, path in paths.items() if scope.covers_path(path)}


async def runs(session: AsyncSession, principal: Principal, host_path: str) -> bool:
    """Whether the caller runs activities of the host at `host_path`."""
    return (await officer_scope(session, principal)).covers_path(host_path)


async def require_host_officer(session: AsyncSession, principal: Principal, host_path: str) -> None:
    """403 unless the caller is an officer of the host at `host_path` or above it."""
    if not (await officer_scope(session, principal)).covers_path(host_path):
        raise Forbidden()


async def require_runs(
    session: AsyncSession, principal: Principal, activity: Activity, host_path: str
) -> None:
    """For the officers' acts on an activity: its host's officers and theirs above pass; for
    anyone else a draft does not exist (404) and a published activity is not theirs (403)."""
    if not (await officer_scope(session, principal)).covers_path(host_path):
        if activity.status == DRAFT:
            raise NotFound()
        raise Forbidden()


async def require_readable(
    session: AsyncSession,
    principal: Principal,
    activity: Activity,
    host_path: str,
    co_hosts: Iterable[uuid.UUID],
) -> None:
    """404 unless the activity reaches the caller as a member (once published) or the caller
    runs it."""
    if activity.status != DRAFT and reaches(
        activity, co_hosts, await belonging_of(session, principal)
    ):
        return
    if (await officer_scope(session, principal)).covers_path(host_path):
        return
    raise NotFound()


async def require_may_sign_up(
    session: AsyncSession, principal: Principal, activity: Activity, co_hosts: Iterable[uuid.UUID]
) -> None:
    """403 `not_registered` unless the activity reaches the member."""
    if not reaches(activity, co_hosts, await belonging_of(session, principal)):
        raise AppError("not_registered")
