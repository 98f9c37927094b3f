"""HTTP of dual-post contributions (双岗位), their evidence, review, statistics and exports."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.authz import load_org_in_scope, officer_scope, require_officer_of, require_scope, scope_for
from app.authz.guards import (
    CurrentMember,
    CurrentPrincipal,
    OfficerOrg,
    OfficerScope,
    ReviewerScope,
)
from app.contributions import exports, media, review, service, stats
from app.contributions.schemas import (
    AttachmentRead,
    CategoriesRead,
    ContributionApprove,
    ContributionCreate,
    ContributionQueueItem,
    ContributionRead,
    ContributionReasoned,
    ContributionReview,
    ContributionUpdate,
    ExportFormat,
    ExportKind,
    ReviewResponse,
    StatsRead,
    SummaryRead,
)
from app.contributions.storage import Storage, get_storage
from app.core import clock
from app.core.audit import audit
from app.core.errors import AppError
from app.core.openapi import problems
from app.core.pagination import Page, PageParams, page_params
from app.deps import DbSession, SessionFactory
from app.models.activity import Post
from app.models.contribution import ContributionStatus

router = APIRouter(tags=["contributions"])

STATS_READ = "stats:read"

Paging = Annotated[PageParams, Depends(page_params)]
RecordId = Annotated[uuid.UUID, Path(description="The contribution")]
AttachmentId = Annotated[uuid.UUID, Path(description="The attachment")]
OrgId = Annotated[uuid.UUID, Path(description="The organization whose subtree is read")]
StorageDep = Annotated[Storage, Depends(get_storage)]


@router.get(
    "/contribution-categories",
    response_model=CategoriesRead,
    responses=problems(401, 403),
    summary="Categories of each post, for pickers (zh-CN and English names)",
)
async def contribution_categories_list(principal: CurrentMember) -> CategoriesRead:
    return service.category_list()


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
) -> ContributionRead:
    """422 `contribution_org_invalid` unless the member is approved at `org_id` or it is their
    record organization; 422 `daily_hours_exceeded` past 24 hours that day (activity credits
    included); `occurred_on` not in the future nor older than the configured limit."""
    created = await service.submit(session, principal.person, data)
    response.headers["Location"] = str(request.url_for("contributions_get", record_id=created.id))
    return created


@router.get(
    "/contributions/{record_id}",
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
    "/contributions/{record_id}",
    response_model=ContributionRead,
    responses=problems(401, 403, 404, 409, 422),
    summary="Edit my pending or returned record (a returned one is resubmitted)",
)
async def contributions_update(
    record_id: RecordId, data: ContributionUpdate, session: DbSession, principal: CurrentMember
) -> ContributionRead:
    return await service.update(session, principal.person, record_id, data)


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


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG, WebP or PDF, at most 10 MB",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/contributions/{record_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    response_model=AttachmentRead,
    responses=problems(401, 403, 404, 409, 413, 415, 422),
    openapi_extra=_UPLOAD_BODY,
    summary="Add evidence to my pending or returned record (at most 9)",
)
async def contributions_attachments_create(
    record_id: RecordId,
    request: Request,
    session: DbSession,
    principal: CurrentMember,
    storage: StorageDep,
) -> AttachmentRead:
    """The type is read from the content (415 `attachment_type_unsupported` unless JPEG, PNG,
    WebP or PDF); 413 `attachment_too_large` past 10 MB, before the body is read when
    Content-Length says so; location metadata (EXIF GPS, XMP) is removed from images."""
    user = principal.person
    await service.check_attachable(session, user.id, record_id)
    # Do not hold a transaction while a phone uploads (SQLite: the write lock; PostgreSQL: a
    # pooled connection idle in transaction).  Only reads happened so far.
    await session.commit()
    upload = await media.receive_upload(
        request.headers.get("content-type", ""),
        request.headers.get("content-length"),
        request.stream(),
    )
    try:
        content_type = media.sniff(upload.head)
        if content_type is None:
            raise AppError("attachment_type_unsupported")
        checked = await asyncio.to_thread(media.check_and_clean, upload.path, content_type)
        return await service.add_attachment(
            session,
            storage,
            user,
            record_id,
            checked,
            upload.path,
            media.sanitize_name(upload.filename),
        )
    finally:
        await asyncio.to_thread(upload.discard)


@router.get(
    "/contributions/{record_id}/attachments",
    response_model=list[AttachmentRead],
    responses=problems(401, 403, 404),
    summary="Evidence of a record (its member, or an officer of its organization's tree)",
)
async def contributions_attachments_list(
    record_id: RecordId, session: DbSession, principal: CurrentMember
) -> list[AttachmentRead]:
    async def scope_of() -> Any:
        return await officer_scope(session, principal)

    return await service.attachments_list(session, principal.person, record_id, scope_of)


_FILE_TYPES: dict[str, dict[str, Any]] = {
    t: {} for t in (media.JPEG, media.PNG, media.WEBP, media.PDF)
}


@router.get(
    "/contributions/{record_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses={200: {"content": _FILE_TYPES}, **problems(401, 403, 404)},
    summary="Download a piece of evidence (its member, or an officer in scope; others 404)",
)
async def contributions_attachments_get(
    record_id: RecordId,
    attachment_id: AttachmentId,
    session: DbSession,
    principal: CurrentMember,
    storage: StorageDep,
) -> StreamingResponse:
    async def scope_of() -> Any:
        return await officer_scope(session, principal)

    row = await service.attachment_for_download(
        session, principal.person, record_id, attachment_id, scope_of
    )
    name = row.original_name or f"{row.id.hex}.{media.EXTENSIONS[row.content_type]}"
    return StreamingResponse(
        storage.open(row.storage_key),
        media_type=row.content_type,
        headers={
            "Content-Length": str(row.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=0",
        },
    )


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
    responses=problems(401, 403, 404, 409, 422),
    summary="Approve a pending record of my subtree",
)
async def contributions_approve(
    record_id: RecordId,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
    data: ContributionApprove | None = None,
) -> ContributionQueueItem:
    comment = data.comment if data is not None else None
    return await review.decide(
        session, principal.person, scope, record_id, "approve", comment or None
    )


@router.post(
    "/contributions/{record_id}/reject",
    response_model=ContributionQueueItem,
    responses=problems(401, 403, 404, 409, 422),
    summary="Reject a pending record of my subtree (reason required)",
)
async def contributions_reject(
    record_id: RecordId,
    data: ContributionReasoned,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
) -> ContributionQueueItem:
    return await review.decide(session, principal.person, scope, record_id, "reject", data.reason)


@router.post(
    "/contributions/{record_id}/return",
    response_model=ContributionQueueItem,
    responses=problems(401, 403, 404, 409, 422),
    summary="Return a pending record to its member for changes (reason required)",
)
async def contributions_return(
    record_id: RecordId,
    data: ContributionReasoned,
    session: DbSession,
    principal: CurrentMember,
    scope: OfficerScope,
) -> ContributionQueueItem:
    return await review.decide(session, principal.person, scope, record_id, "return", data.reason)


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
    `review_own_forbidden` for the officer's own record."""
    return await review.decide_many(
        session, principal.person, scope, data.ids, data.decision, data.comment or None
    )


@router.get(
    "/orgs/{org_id}/stats",
    response_model=StatsRead,
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
    summary="Figures of the organization's subtree (officers; city systems with stats:read)",
)
async def orgs_stats(
    org_id: OrgId,
    session: DbSession,
    principal: CurrentPrincipal,
    from_: Annotated[
        date | None, Query(alias="from", description="First local day (default: 1 January)")
    ] = None,
    to: Annotated[date | None, Query(description="Last local day (default: today)")] = None,
) -> StatsRead:
    require_scope(principal, STATS_READ)
    scope = await scope_for(session, principal, STATS_READ)
    org = await load_org_in_scope(session, org_id, scope)
    return await stats.org_stats(session, org, from_, to)


_EXPORT_TYPES: dict[str, dict[str, Any]] = {
    "text/csv": {},
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
}
_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@router.get(
    "/orgs/{org_id}/exports/{kind}",
    response_class=StreamingResponse,
    responses={200: {"content": _EXPORT_TYPES}, **problems(401, 403, 404, 422)},
    tags=["orgs"],
    summary="A spreadsheet of the subtree: members, contributions or attendance",
)
async def orgs_exports_get(
    org_id: OrgId,
    kind: Annotated[ExportKind, Path(description="members, contributions or attendance")],
    session: DbSession,
    factory: SessionFactory,
    principal: CurrentMember,
    format: Annotated[ExportFormat, Query(description="xlsx (default) or csv")] = "xlsx",
    status: Annotated[
        ContributionStatus | None, Query(description="contributions: only this state")
    ] = None,
    from_: Annotated[date | None, Query(alias="from", description="First local day")] = None,
    to: Annotated[date | None, Query(description="Last local day")] = None,
) -> StreamingResponse:
    """Phone and ID numbers masked, headers in Chinese; every export is written to the audit
    log (who exported what, PIPL)."""
    org = await require_officer_of(session, principal, org_id)
    query = exports.ExportQuery(
        kind=kind,
        path=org.path,
        status=status.value if status and kind == "contributions" else None,
        first=from_,
        last=to,
    )
    audit(
        session,
        action=f"export.{kind}",
        object_type="export",
        object_id=None,
        org_id=org.id,
        actor_id=principal.person.id,
        comment=(f"format={format} status={query.status or ''} from={from_ or ''} to={to or ''}"),
    )
    stream = (
        exports.csv_stream(factory, query)
        if format == "csv"
        else exports.xlsx_stream(factory, query)
    )
    filename = f"{exports.TITLES[kind]}-{clock.local_today().isoformat()}.{format}"
    return StreamingResponse(
        stream,
        media_type=_MEDIA[format],
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{kind}.{format}\"; filename*=UTF-8''{quote(filename)}"
            ),
            "Cache-Control": "no-store",
        },
    )
