"""Record a domain event in the same transaction as the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.kit import OutboxEvent


def record_event(
    session: AsyncSession, topic: str, payload: dict[str, Any], aggregate_id: str | None = None
) -> OutboxEvent:
    """Add an outbox row; it is committed, or rolled back, with the caller's change.

    Payloads carry ids and states, never personal data: a worker reads what it needs.
    """
    event = OutboxEvent(topic=topic, payload=payload, aggregate_id=aggregate_id)
    session.add(event)
    return event
