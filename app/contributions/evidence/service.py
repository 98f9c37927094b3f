"""The rules of evidence: only the member adds it, to their own record while it is pending or
returned, at most nine per record; the member and the officers over the record's organization
read it, anyone else gets 404.

An upload is checked before its body is read (the record exists, is the caller's, is editable,
has room); the router then ends the request's reads and streams the body to a temporary file
(`media.receive_upload`); `add` types it by its content, re-encodes images from their pixels
(no metadata survives) and stores the file last, so that a failure before that rolls the row
back.  A store that cannot take the file answers 507 `storage_full` or 503
`storage_unavailable` (`app.integrations.storage`), and the row goes with the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Scope, require_owner_or_officer
from app.contributions import repository as records_repo
from app.contributions.evidence import media
from app.contributions.evidence import repository as repo
from app.contributions.evidence.schemas import AttachmentRead
from app.contributions.rules import EDITABLE
from app.core import clock
from app.core.errors import AppError, InvalidTransition, NotFound, register_codes
from app.integrations.storage import Storage
from app.models.contribution import MAX_ATTACHMENTS, ContributionAttachment
from app.models.user import User

register_codes(
    {
        "attachment_limit": (
            409,
            "每条记录最多上传 9 个附件",
            "At most 9 attachments per record",
        ),
    }
)


@dataclass(frozen=True)
class Download:
    """A stored file to send: its bytes as they are read, and what to call it."""

    chunks: AsyncIterator[bytes]
    content_type: str
    size: int
    filename: str


def _read(row: repo.AttachmentRow | ContributionAttachment) -> AttachmentRead:
    return AttachmentRead(
        id=row.id,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        original_name=row.original_name,
        created_at=row.created_at,
    )


async def check_attachable(session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID) -> None:
    """Before an upload is read: the member's own record, editable, with room for one more."""
    record = await records_repo.own(session, user_id, record_id)
    if record is None:
        raise NotFound()
    if record.status not in EDITABLE:
        raise InvalidTransition()
    if record.attachment_count >= MAX_ATTACHMENTS:
        raise AppError("attachment_limit")


async def add(
    session: AsyncSession,
    storage: Storage,
    user: User,
    record_id: uuid.UUID,
    upload: media.Upload,
) -> AttachmentRead:
    """Add a received file to the member's record (checked by `check_attachable` before it
    was read); the temporary file is discarded whatever happens.

    415 `attachment_type_unsupported` unless the content is JPEG, PNG, WebP or PDF; 422
    `attachment_corrupt` for an image that does not decode, `attachment_too_many_pixels` for
    one too large to decode; 507 `storage_full` / 503 `storage_unavailable` when a disk of
    the server cannot take it."""
    try:
        content_type = media.sniff(upload.head)
        if content_type is None:
            raise AppError("attachment_type_unsupported")
        checked = await media.check(upload, content_type)
        return await _store(
            session,
            storage,
            user,
            record_id,
            checked,
            upload.path,
            media.sanitize_name(upload.filename),
        )
    finally:
        await media.discard(upload)


async def _store(
    session: AsyncSession,
    storage: Storage,
    user: User,
    record_id: uuid.UUID,
    checked: media.Checked,
    source: Path,
    original_name: str | None,
) -> AttachmentRead:
    reserved = await repo.reserve_attachment(
        session, record_id, user.id, limit=MAX_ATTACHMENTS, editable=EDITABLE
    )
    if not reserved:
        # Changed while the file arrived: say why, as before reading it.
        await check_attachable(session, user.id, record_id)
        raise InvalidTransition()
    attachment_id = uuid.uuid4()
    extension = media.EXTENSIONS[checked.content_type]
    key = f"contributions/{record_id.hex}/{attachment_id.hex}.{extension}"
    attachment = ContributionAttachment(
        id=attachment_id,
        contribution_id=record_id,
        storage_key=key,
        content_type=checked.content_type,
        size=checked.size,
        sha256=checked.sha256,
        original_name=original_name,
        created_at=clock.now(),
    )
    session.add(attachment)
    await session.flush()
    # Stored last: a failure here rolls the row back.  (A failed commit afterwards can leave
    # an unreferenced file behind; it is never served, since only rows are.)
    await storage.put_file(key, source)
    return _read(attachment)


async def attachments_list(
    session: AsyncSession, user: User, scope: Scope, record_id: uuid.UUID
) -> list[AttachmentRead]:
    """The record's evidence, oldest first, for its member or an officer whose `scope` covers
    the record's organization."""
    owner = await repo.record_owner(session, record_id)
    if owner is None:
        raise NotFound()
    require_owner_or_officer(user.id, scope, owner_id=owner.user_id, org_path=owner.path)
    return [_read(r) for r in await repo.attachments_of(session, record_id)]


async def download(
    session: AsyncSession,
    storage: Storage,
    user: User,
    scope: Scope,
    record_id: uuid.UUID,
    attachment_id: uuid.UUID,
) -> Download:
    """One piece of evidence of the record, for the same readers as the list."""
    row = await repo.stored_file(session, record_id, attachment_id)
    if row is None:
        raise NotFound()
    require_owner_or_officer(user.id, scope, owner_id=row.user_id, org_path=row.path)
    return Download(
        chunks=storage.open(row.storage_key),
        content_type=row.content_type,
        size=row.size,
        filename=row.original_name or f"{row.id.hex}.{media.EXTENSIONS[row.content_type]}",
    )
