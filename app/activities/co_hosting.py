"""Co-hosts of an activity (协办组织), and the invitations of those named from outside.

An officer who names co-hosts may speak only for the organizations they act for (their own
subtree; an admin for all): those co-host at once.  Any other named organization is invited
(`pending`) and opens the activity to its members only once an officer of it, or of an
organization above it, accepts; they may decline instead.  So no officer can push an activity
into another organization's subtree (app/authz/activities.py decides who sees what, counting
accepted co-hosts only).

Each invitation and each decision is audited under the invited organization and goes out as
an outbox event (`activity.co_host.invited|accepted|declined`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository import activities as repo
from app.activities.repository import co_hosts as invitations_repo
from app.activities.repository.co_hosts import InvitationRow
from app.activities.schemas import CoHostHost, CoHostInvitationRead
from app.authz import Principal
from app.authz import activities as policy
from app.core import clock
from app.core.audit import audit
from app.core.errors import InvalidTransition, NotFound
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import Activity, CoHostStatus
from app.models.organization import Organization

OBJECT = "activity"


def _announce(
    session: AsyncSession,
    *,
    activity_id: uuid.UUID,
    host_id: uuid.UUID,
    org_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    from_state: str | None,
    to_state: CoHostStatus,
) -> None:
    topic = "activity.co_host." + ("invited" if to_state is CoHostStatus.pending else to_state)
    audit(
        session,
        action=topic,
        object_type=OBJECT,
        object_id=activity_id,
        org_id=org_id,
        actor_id=actor_id,
        from_state=from_state,
        to_state=to_state.value,
    )
    record_event(
        session,
        topic,
        {
            "activity_id": str(activity_id),
            "host_org_id": str(host_id),
            "org_id": str(org_id),
            "actor_id": None if actor_id is None else str(actor_id),
        },
        aggregate_id=str(activity_id),
    )


async def name(
    session: AsyncSession,
    principal: Principal,
    activity: Activity,
    co_hosts: Mapping[uuid.UUID, str],
) -> None:
    """Make `co_hosts` (id → path) the activity's named co-hosts: those the caller acts for
    are accepted at once, the others invited; co-hosts no longer named are dropped."""
    accepted = await policy.acts_for(session, principal, co_hosts)
    invited = await repo.set_co_hosts(
        session,
        activity.id,
        list(co_hosts),
        accepted=accepted,
        actor_id=principal.user_id,
        now=clock.now(),
    )
    for org_id in invited:
        _announce(
            session,
            activity_id=activity.id,
            host_id=activity.org_id,
            org_id=org_id,
            actor_id=principal.user_id,
            from_state=None,
            to_state=CoHostStatus.pending,
        )


def _read(row: InvitationRow) -> CoHostInvitationRead:
    return CoHostInvitationRead(
        activity_id=row.activity_id,
        org_id=row.org_id,
        status=CoHostStatus(row.status),
        title=row.title,
        host=CoHostHost(id=row.host_id, name=row.host_name),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        visibility=row.visibility,
        activity_status=row.activity_status,
        invited_at=row.created_at,
        invited_by=row.invited_by,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
    )


async def invitations(
    session: AsyncSession, org: Organization, status: CoHostStatus | None, params: PageParams
) -> Page[CoHostInvitationRead]:
    """The organization's invitations to co-host (the caller is an officer of it or above)."""
    rows = await invitations_repo.invitations_page(
        session, org.id, None if status is None else status.value, params
    )
    items, cursor = page_of(rows, params, invitations_repo.cursor_key)
    return Page(items=[_read(r) for r in items], next_cursor=cursor)


async def decide(
    session: AsyncSession,
    principal: Principal,
    org: Organization,
    activity_id: uuid.UUID,
    to_status: CoHostStatus,
) -> CoHostInvitationRead:
    """Accept or decline the organization's pending invitation to co-host `activity_id`
    (the caller is an officer of the organization or above: the `OfficerOrg` guard).

    No invitation of this organization to that activity: 404; decided already, or the
    activity is cancelled or completed: 409 `invalid_transition`."""
    decided = await invitations_repo.decide(
        session,
        activity_id,
        org.id,
        to_status=to_status,
        actor_id=principal.person.id,
        now=clock.now(),
    )
    row = await invitations_repo.invitation(session, activity_id, org.id)
    if row is None:
        raise NotFound()
    if not decided:
        raise InvalidTransition()
    _announce(
        session,
        activity_id=activity_id,
        host_id=row.host_id,
        org_id=org.id,
        actor_id=principal.person.id,
        from_state=CoHostStatus.pending.value,
        to_state=to_status,
    )
    return _read(row)
