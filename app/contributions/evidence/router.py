"""HTTP of evidence: upload to a record, list a record's evidence, download one piece.

Included by the contributions router where these routes sit among its own (their place in
the OpenAPI document), under its tag.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import StreamingResponse

from app.authz.guards import CurrentMember, OfficerScope
from app.contributions.evidence import media, service
from app.contributions.evidence.schemas import AttachmentRead
from app.core.openapi import problems
from app.deps import AppStorage, DbSession
from app.idempotency import IdempotentRoute

router = APIRouter(route_class=IdempotentRoute)

RecordId = Annotated[uuid.UUID, Path(description="The contribution")]
AttachmentId = Annotated[uuid.UUID, Path(description="The attachment")]

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
                            "description": (
                                "JPEG, PNG, WebP or PDF, at most 10 MB; images at most 60 "
                                "megapixels"
                            ),
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
    responses=problems(
        401,
        403,
        404,
        409,
        413,
        415,
        422,
        503,
        507,
        descriptions={
            422: (
                "`attachment_missing` (no file in the field `file`), `attachment_corrupt` (the "
                "file does not decode), `attachment_too_many_pixels` (an image past 60 "
                "megapixels). Nothing was written"
            ),
            503: (
                "`storage_unavailable`: the file store cannot be written (read-only, failing), "
                "or `service_unavailable`: the database is unreachable. Nothing was written; "
                "retry after `Retry-After`"
            ),
        },
    ),
    openapi_extra=_UPLOAD_BODY,
    summary="Add evidence to my pending or returned record (at most 9)",
)
async def contributions_attachments_create(
    record_id: RecordId,
    request: Request,
    session: DbSession,
    principal: CurrentMember,
    storage: AppStorage,
) -> AttachmentRead:
    """The type is read from the content (415 `attachment_type_unsupported` unless JPEG, PNG,
    WebP or PDF); 413 `attachment_too_large` past 10 MB, before the body is read when
    Content-Length says so.  Images are stored re-encoded from their pixels, in their own
    format, with the EXIF orientation applied and no metadata at all (no EXIF, XMP, ICC
    profile, comment or text chunk): the stored file, its size and its SHA-256 are those of
    the re-encoded image.  A server whose disk cannot take the file answers 507
    `storage_full` or 503 `storage_unavailable` (with Retry-After); nothing is written."""
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
    return await service.add(session, storage, user, record_id, upload)


@router.get(
    "/contributions/{record_id}/attachments",
    response_model=list[AttachmentRead],
    responses=problems(401, 403, 404),
    summary="Evidence of a record (its member, or an officer of its organization's tree)",
)
async def contributions_attachments_list(
    record_id: RecordId, session: DbSession, principal: CurrentMember, scope: OfficerScope
) -> list[AttachmentRead]:
    return await service.attachments_list(session, principal.person, scope, record_id)


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
    scope: OfficerScope,
    storage: AppStorage,
) -> StreamingResponse:
    found = await service.download(
        session, storage, principal.person, scope, record_id, attachment_id
    )
    return StreamingResponse(
        found.chunks,
        media_type=found.content_type,
        headers={
            "Content-Length": str(found.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=0",
        },
    )
