"""The SQL of evidence: the conditional count of one more attachment, and the attachment rows
with what deciding who may read them needs (the record's owner and organization path)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.contribution import Contribution, ContributionAttachment
from app.models.organization import Organization


class RecordOwner(NamedTuple):
    """Whose record it is and where it sits in the tree."""

    user_id: uuid.UUID
    path: str


class StoredFile(NamedTuple):
    """An attachment to send, with its record's owner and organization path."""

    id: uuid.UUID
    storage_key: str
    content_type: str
    size: int
    original_name: str | None
    user_id: uuid.UUID
    path: str


class AttachmentRow(NamedTuple):
    id: uuid.UUID
    content_type: str
    size: int
    sha256: str
    original_name: str | None
    created_at: datetime


async def reserve_attachment(
    session: AsyncSession,
    record_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    limit: int,
    editable: Sequence[str],
) -> bool:
    """Count one more attachment to the member's record, conditionally: never more than
    `limit`, only while the record is in one of the `editable` states."""
    stmt = (
        update(Contribution)
        .where(
            Contribution.id == record_id,
            Contribution.user_id == user_id,
            Contribution.status.in_(editable),
            Contribution.attachment_count < limit,
        )
        .values(attachment_count=Contribution.attachment_count + 1)
        .returning(Contribution.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).first() is not None


async def stored_file(
    session: AsyncSession, record_id: uuid.UUID, attachment_id: uuid.UUID
) -> StoredFile | None:
    stmt = (
        select(
            ContributionAttachment.id,
            ContributionAttachment.storage_key,
            ContributionAttachment.content_type,
            ContributionAttachment.size,
            ContributionAttachment.original_name,
            Contribution.user_id,
            Organization.path,
        )
        .join(Contribution, Contribution.id == ContributionAttachment.contribution_id)
        .join(Organization, Organization.id == Contribution.org_id)
        .where(
            ContributionAttachment.id == attachment_id,
            ContributionAttachment.contribution_id == record_id,
        )
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else StoredFile(**row._mapping)


async def record_owner(session: AsyncSession, record_id: uuid.UUID) -> RecordOwner | None:
    stmt = (
        select(Contribution.user_id, Organization.path)
        .join(Organization, Organization.id == Contribution.org_id)
        .where(Contribution.id == record_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else RecordOwner(**row._mapping)


async def attachments_of(session: AsyncSession, record_id: uuid.UUID) -> list[AttachmentRow]:
    stmt = (
        select(
            ContributionAttachment.id,
            ContributionAttachment.content_type,
            ContributionAttachment.size,
            ContributionAttachment.sha256,
            ContributionAttachment.original_name,
            ContributionAttachment.created_at,
        )
        .where(ContributionAttachment.contribution_id == record_id)
        .order_by(ContributionAttachment.created_at, ContributionAttachment.id)
    )
    return [AttachmentRow(**r._mapping) for r in await session.execute(stmt)]
