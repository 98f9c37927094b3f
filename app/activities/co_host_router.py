"""HTTP of co-host invitations, under the invited organization: its officers (or those above
it) list the activities it was named co-host of, and accept or decline each."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.activities import co_hosting
from app.activities.schemas import CoHostInvitationRead
from app.authz.guards import CurrentMember, OfficerOrg
from app.core.openapi import problems
from app.core.pagination import Page
from app.deps import DbSession, Paging
from app.idempotency import IdempotentRoute
from app.models.activity import CoHostStatus

router = APIRouter(tags=["activities"], route_class=IdempotentRoute)

ActivityId = Annotated[uuid.UUID, Path(description="The activity the organization is invited to")]


@router.get(
    "/orgs/{org_id}/co-host-invitations",
    response_model=Page[CoHostInvitationRead],
    responses=problems(401, 403, 404, 422),
    summary="Activities this organization is named co-host of, oldest invitation first",
)
async def orgs_co_host_invitations_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    status: Annotated[
        CoHostStatus | None, Query(description="Only this state (every state if absent)")
    ] = None,
) -> Page[CoHostInvitationRead]:
    """An invitation shows the activity's title, host, times and visibility, drafts included:
    the host asked this organization to co-host it."""
    return await co_hosting.invitations(session, org, status, paging)


@router.post(
    "/orgs/{org_id}/co-host-invitations/{activity_id}/accept",
    response_model=CoHostInvitationRead,
    responses=problems(401, 403, 404, 409),
    summary="Accept to co-host: the activity opens to this organization's members",
)
async def orgs_co_host_invitations_accept(
    org: OfficerOrg,
    activity_id: ActivityId,
    session: DbSession,
    principal: CurrentMember,
) -> CoHostInvitationRead:
    """403 for anyone but an officer of the organization or above it (the host's officers
    included); 404 when the organization was not named co-host of the activity; 409
    `invalid_transition` once decided, or when the activity is cancelled or completed."""
    return await co_hosting.decide(session, principal, org, activity_id, CoHostStatus.accepted)


@router.post(
    "/orgs/{org_id}/co-host-invitations/{activity_id}/decline",
    response_model=CoHostInvitationRead,
    responses=problems(401, 403, 404, 409),
    summary="Decline to co-host: the activity stays closed to this organization's members",
)
async def orgs_co_host_invitations_decline(
    org: OfficerOrg,
    activity_id: ActivityId,
    session: DbSession,
    principal: CurrentMember,
) -> CoHostInvitationRead:
    """As accepting; a declined invitation stays declined while the host keeps naming the
    organization (drop it from `co_host_org_ids` and name it again to invite anew)."""
    return await co_hosting.decide(session, principal, org, activity_id, CoHostStatus.declined)
