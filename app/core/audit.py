"""Append to the audit log in the caller's transaction."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.kit import AuditLog


def audit(
    session: AsyncSession,
    *,
    action: str,
    object_type: str,
    object_id: uuid.UUID | str | None,
    org_id: uuid.UUID | None,
    actor_id: uuid.UUID | None = None,
    actor_client_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    comment: str | None = None,
) -> AuditLog:
    entry = AuditLog(
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else None,
        org_id=org_id,
        actor_id=actor_id,
        actor_client_id=actor_client_id,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
    )
    session.add(entry)
    return entry
