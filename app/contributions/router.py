"""HTTP of dual-post contributions (双岗位): a member's records and their review.

Evidence has its own router (`evidence.router`), included below; statistics and exports are
in `app.reports`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from app.authz.guards import CurrentMember, OfficerOrg, OfficerScope, ReviewerScope
from app.contributions import categories, review, service
from app.contributions.evidence.router import router as evidence_router
from app.contributions.schemas import (
    CategoriesRead,
    ContributionApprove,
    ContributionCreate,
    ContributionQueueItem,
    ContributionRead,
    ContributionReasoned,
    ContributionReview,
    ContributionUpdate,
    ReviewResponse,
    SummaryRead,
)
from app.core import clock
from app.core.openapi import problems
from app.core.pagination import Page
from app.core.urls import public_url
from app.deps import AppSettings, DbSession, Paging
from app.idempotency import IdempotentRoute
from app.models.activity import Post
from app.models.contribution import ContributionStatus
from app.review.preconditions import IF_MATCH_DESCRIPTION

router = APIRouter(tags=["contributions"], route_class=IdempotentRoute)

RecordId = Annotated[uuid.UUID, Path(description="The contribution")]
OrgId = Annotated[uuid.UUID, Path(description="The organization whose subtree is read")]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", max_length=1000, description=IF_MATCH_DESCRIPTION)
]


@router.get(
    "/contribution-categories",
    response_model=CategoriesRead,
    responses=problems(401, 403),
    summary="Categories of each post, for pickers (zh-CN and English names)",
)
async def contribution_categories_list(principal: CurrentMember) -> CategoriesRead:
    return categories.category_list()


@router.post(
    "/contributions",
    status_code=status.HTTP_201_CREATED,
    response_model=ContributionRead,
    responses=problems(401, 403, 409, 422),
    summary="Log a contribution at one of my two posts",
)
async def contributions_create(
    data: ContributionCreate,
    session: DbSession,
    principal: CurrentMember,
    request: Request,
    response: Response,
    settings: AppSettings,
) -> ContributionRead:
    """422 `contribution_org_invalid` unless the member holds an approved check-in at `org_id`
    (an organization's queue receives records only from members it approved; the record
    organization named on `PATCH /me` is not confirmed and does not count); 422
    `daily_hours_exceeded` past 24 hours that day (activity credits included); `occurred_on`
    not in the future nor older than the configured limit."""
    created = await service.submit(
        session, principal.person, data, max_age_days=settings.contribution_max_age_days
    )
    response.headers["Location"] = public_url(
        settings, request, "contributions_get", record_id=created.id
    )
    return created


@router.get(
    # `:uuid`: POST /contributions/review shares the shape; other methods on it are 405s.
    "/contributions/{record_id:uuid}",
    response_model=ContributionRead,
    responses=problems(401, 403, 404),
    summary="One of my records (manual or an activity credit)",
)
async def contributions_get(
    record_id: RecordId, session: DbSession, principal: CurrentMember
) -> ContributionRead:
    return await service.get_mine(session, principal.person.id, record_id)


@router.get(
    "/me/contributions",
    response_model=Page[ContributionRead],
    responses=problems(401, 403, 422),
    summary="My records, newest first; activity credits appear as approved, source activity",
)
async def me_contributions_list(
    session: DbSession,
    principal: CurrentMember,
    paging: Paging,
    status: Annotated[ContributionStatus | None, Query(description="Only this state")] = None,
    post: Annotated[Post | None, Query(description="Only this post")] = None,
    year: Annotated[
        int | None, Query(ge=2000, le=2100, description="Local (Asia/Shanghai) year of the date")
    ] = None,
) -> Page[ContributionRead]:
    return await service.list_mine(
        session, principal.person.id, status=status, post=post, year=year, params=paging
    )


@router.get(
    "/me/contributions/summary",
    response_model=SummaryRead,
    responses=problems(401, 403, 422),
    summary="My hours and counts per post and state in a year",
)
async def me_contributions_summary(
    session: DbSession,
    principal: CurrentMember,
    year: Annotated[
        int | None, Query(ge=2000, le=2100, description="Local year (default: this year)")
    ] = None,
) -> SummaryRead:
    return await service.summary(session, principal.person.id, year or clock.local_today().year)


@router.patch(
    # `:uuid`: POST /contributions/review shares the shape; other methods on it are 405s.
    "/contributions/{record_id:uuid}",
    response_model=ContributionRead,
    responses=problems(401, 403, 404, 409, 422),
    summary="Edit my pending or returned record (a returned one is resubmitted)",
)
async def contributions_update(
    record_id: RecordId,
    data: ContributionUpdate,
    session: DbSession,
    principal: CurrentMember,
    settings: AppSettings,
) -> ContributionRead:
    return await service.update(
        session,
        principal.person,
        record_id,
        data,
        max_age_days=settings.contribution_max_age_days,
    )


@router.post(
    "/contributions/{record_id}/withdraw",
    response_model=ContributionRead,
    responses=problems(401, 403, 404, 409),
    summary="Withdraw my pending or returned record",
)
async def contributions_withdraw(
    record_id: RecordId, session: DbSession, principal: CurrentMember
) -> ContributionRead:
    return await service.withdraw(session, principal.person, record_id)


# Evidence (upload, list, download) has its own router; its routes sit here in the document.
router.include_router(evidence_router)


@router.get(
    "/orgs/{org_id}/contributions",
    response_model=Page[ContributionQueueItem],
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
    summary="Records of the organization's subtree, oldest first (the review queue)",
)
async def orgs_contributions_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    status: Annotated[
        ContributionStatus | None, Query(description="Only this state (every state if absent)")
    ] = None,
) -> Page[ContributionQueueItem]:
    return await review.queue(session, org, status, paging)


@router.post(
    "/contributions/{record_id}/approve",
    response_model=ContributionQueueItem,
    responses=problems(401, 403, 404, 409, 412, 422),
    summary="Approve a pending record of my subtree",
)
async def contributions_approve(
    record_id: RecordId,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    if_match: IfMatch = None,
    data: ContributionApprove | None = None,
) -> ContributionQueueItem:
    """412 `precondition_failed` when `If-Match` is not the record's current ETag (its
    member edited it, or added evidence, since it was read); 422 `daily_hours_exceeded` when
    approving it would bring its member's approved hours of that day (activity credits
    included) past 24."""
    comment = data.comment if data is not None else None
    return await review.decide(
        session, principal.person, scope, record_id, "approve", comment or None, if_match
    )


@router.post(
    "/contributions/{record_id}/reject",
    response_model=ContributionQueueItem,
    responses=problems(401, 403, 404, 409, 412, 422),
    summary="Reject a pending record of my subtree (reason required)",
)
async def contributions_reject(
    record_id: RecordId,
    data: ContributionReasoned,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    if_match: IfMatch = None,
) -> ContributionQueueItem:
    """412 `precondition_failed` when `If-Match` is not the record's current ETag."""
    return await review.decide(
        session, principal.person, scope, record_id, "reject", data.reason, if_match
    )


@router.post(
    "/contributions/{record_id}/return",
    response_model=ContributionQueueItem,
    responses=problems(401, 403, 404, 409, 412, 422),
    summary="Return a pending record to its member for changes (reason required)",
)
async def contributions_return(
    record_id: RecordId,
    data: ContributionReasoned,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    if_match: IfMatch = None,
) -> ContributionQueueItem:
    """412 `precondition_failed` when `If-Match` is not the record's current ETag."""
    return await review.decide(
        session, principal.person, scope, record_id, "return", data.reason, if_match
    )


@router.post(
    "/contributions/review",
    response_model=ReviewResponse,
    responses=problems(401, 403, 422),
    summary="Decide many records at once; a result per id",
)
async def contributions_review(
    data: ContributionReview, session: DbSession, principal: CurrentMember, scope: ReviewerScope
) -> ReviewResponse:
    """Each id gets `{id, ok, status?, code?}`: `not_found` for an unknown id or one outside
    the caller's subtree, `invalid_transition` for one no longer pending,
    `review_own_forbidden` for the officer's own record, `precondition_failed` for one whose
    ETag is no longer the one given in `if_match`, `daily_hours_exceeded` for one whose
    approval would bring its member's approved hours of that day (activity credits included)
    past 24; ids are approved in the order given."""
    return await review.decide_many(
        session,
        principal.person,
        scope,
        data.ids,
        data.decision,
        data.comment or None,
        data.if_match,
    )
