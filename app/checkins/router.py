"""HTTP of check-ins (登记报到): members submit, withdraw and leave; officers review their
subtree's queue, decide one by one or in a batch, and read members and the audit log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from app.authz.guards import CurrentMember, OfficerOrg, OfficerScope, ReviewerScope
from app.checkins import audit_log, members, review, submission
from app.checkins.schemas import (
    AuditEntryRead,
    CheckinApprove,
    CheckinCreate,
    CheckinQueueItem,
    CheckinRead,
    CheckinReject,
    CheckinReview,
    MemberRead,
    ReviewResponse,
)
from app.core.openapi import problems
from app.core.pagination import Page
from app.core.urls import public_url
from app.deps import AppSettings, DbSession, Paging
from app.idempotency import IdempotentRoute
from app.models.enums import CheckinStatus
from app.review.preconditions import IF_MATCH_DESCRIPTION

router = APIRouter(tags=["checkins"], route_class=IdempotentRoute)

CheckinId = Annotated[uuid.UUID, Path(description="The check-in")]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", max_length=1000, description=IF_MATCH_DESCRIPTION)
]


@router.post(
    "/checkins",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckinRead,
    responses={
        201: {
            "description": "Submitted, pending review",
            "headers": {
                "Location": {
                    "description": "The new check-in",
                    "schema": {"type": "string", "format": "uri"},
                }
            },
        },
        **problems(401, 403, 404, 409, 422),
    },
    summary="Check in to an organization (登记报到)",
)
async def checkins_create(
    data: CheckinCreate,
    session: DbSession,
    principal: CurrentMember,
    request: Request,
    response: Response,
    settings: AppSettings,
) -> CheckinRead:
    """Submit a pending check-in.  422 `checkin_target_invalid` unless the organization is
    regional, enterprise or building; 422 `profile_incomplete` naming the missing fields;
    409 `checkin_exists` when one is already pending or approved there."""
    created = await submission.submit(session, principal.person, data)
    response.headers["Location"] = public_url(
        settings, request, "checkins_get", checkin_id=created.id
    )
    return created


@router.get(
    # `:uuid`: POST /checkins/review shares the shape; GET /checkins/review is then a 405.
    "/checkins/{checkin_id:uuid}",
    response_model=CheckinRead,
    responses=problems(401, 403, 404),
    summary="One of my check-ins",
)
async def checkins_get(
    checkin_id: CheckinId, session: DbSession, principal: CurrentMember
) -> CheckinRead:
    return await submission.get_mine(session, principal.person.id, checkin_id)


@router.get(
    "/me/checkins",
    response_model=Page[CheckinRead],
    responses=problems(401, 403, 422),
    summary="My check-ins, every state, newest first",
)
async def me_checkins_list(
    session: DbSession, principal: CurrentMember, paging: Paging
) -> Page[CheckinRead]:
    return await submission.list_mine(session, principal.person.id, paging)


@router.post(
    "/checkins/{checkin_id}/withdraw",
    response_model=CheckinRead,
    responses=problems(401, 403, 404, 409),
    summary="Withdraw my pending check-in",
)
async def checkins_withdraw(
    checkin_id: CheckinId, session: DbSession, principal: CurrentMember
) -> CheckinRead:
    return await submission.withdraw(session, principal.person.id, checkin_id)


@router.post(
    "/checkins/{checkin_id}/leave",
    response_model=CheckinRead,
    responses=problems(401, 403, 404, 409),
    summary="Leave an organization I am registered with",
)
async def checkins_leave(
    checkin_id: CheckinId, session: DbSession, principal: CurrentMember
) -> CheckinRead:
    return await submission.leave(session, principal.person.id, checkin_id)


@router.get(
    "/orgs/{org_id}/checkins",
    response_model=Page[CheckinQueueItem],
    responses=problems(401, 403, 404, 422),
    summary="Check-ins of the organization's subtree, oldest first",
)
async def orgs_checkins_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    status: Annotated[
        CheckinStatus | None, Query(description="Only this state (every state if absent)")
    ] = None,
) -> Page[CheckinQueueItem]:
    return await review.queue(session, org, status, paging)


@router.post(
    "/checkins/{checkin_id}/approve",
    response_model=CheckinQueueItem,
    responses=problems(401, 403, 404, 409, 412, 422),
    summary="Approve a pending check-in of my subtree",
)
async def checkins_approve(
    checkin_id: CheckinId,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    if_match: IfMatch = None,
    data: CheckinApprove | None = None,
) -> CheckinQueueItem:
    """404 outside the caller's subtree; 403 `review_own_forbidden` for the officer's own
    check-in (an officer above decides it); 412 `precondition_failed` when `If-Match` is not
    the check-in's current ETag (it or its member's profile changed since it was read);
    409 `invalid_transition` unless pending."""
    comment = data.comment if data is not None else None
    return await review.decide(
        session, principal.person, scope, checkin_id, "approve", comment or None, if_match
    )


@router.post(
    "/checkins/{checkin_id}/reject",
    response_model=CheckinQueueItem,
    responses=problems(401, 403, 404, 409, 412, 422),
    summary="Reject a pending check-in of my subtree (reason required)",
)
async def checkins_reject(
    checkin_id: CheckinId,
    data: CheckinReject,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    if_match: IfMatch = None,
) -> CheckinQueueItem:
    """404 outside the caller's subtree; 403 `review_own_forbidden` for the officer's own
    check-in (an officer above decides it); 412 `precondition_failed` when `If-Match` is not
    the check-in's current ETag; 409 `invalid_transition` unless pending."""
    return await review.decide(
        session, principal.person, scope, checkin_id, "reject", data.reason, if_match
    )


@router.post(
    "/checkins/review",
    response_model=ReviewResponse,
    responses=problems(401, 403, 422),
    summary="Decide many check-ins at once; a result per id",
)
async def checkins_review(
    data: CheckinReview, session: DbSession, principal: CurrentMember, scope: ReviewerScope
) -> ReviewResponse:
    """Each id gets `{id, ok, status?, code?}`: `not_found` for an unknown id or one outside
    the caller's subtree, `invalid_transition` for one no longer pending,
    `review_own_forbidden` for the officer's own check-in, `precondition_failed` for one
    whose ETag is no longer the one given in `if_match`."""
    return await review.decide_many(
        session,
        principal.person,
        scope,
        data.ids,
        data.decision,
        data.comment or None,
        data.if_match,
    )


@router.get(
    "/orgs/{org_id}/audit-log",
    response_model=Page[AuditEntryRead],
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
    summary="Audit log of the organization's subtree, newest first",
)
async def orgs_audit_log_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    action: Annotated[
        str | None, Query(max_length=60, description="e.g. `checkin.approved`")
    ] = None,
    actor_id: Annotated[uuid.UUID | None, Query(description="Who acted")] = None,
) -> Page[AuditEntryRead]:
    return await audit_log.audit_log(session, org, action=action, actor_id=actor_id, params=paging)


@router.get(
    "/orgs/{org_id}/members",
    response_model=Page[MemberRead],
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
    summary="Approved members of the organization's subtree, personal data masked",
)
async def orgs_members_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    floating: Annotated[
        bool | None, Query(description="Only floating (true) or only local (false) members")
    ] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=50, description="Part of the name")
    ] = None,
) -> Page[MemberRead]:
    """One item per approved registration (a member registered with two organizations of the
    subtree appears under each)."""
    return await members.members(session, org, floating=floating, q=q, params=paging)
