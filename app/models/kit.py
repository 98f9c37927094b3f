"""Tables of the cross-cutting kit: idempotency records, outbox, audit log, rate limits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UUIDMixin, utcnow


class IdempotencyRecord(UUIDMixin, Base):
    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("caller", "key"),
        Index("ix_idempotency_records_expires_at", "expires_at"),
    )

    caller: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(12), default="in_flight")
    status_code: Mapped[int | None]
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class OutboxEvent(UUIDMixin, Base):
    """A domain event recorded in the transaction of the change; workers deliver it."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "published_at", "created_at"),)

    topic: Mapped[str] = mapped_column(String(80))
    aggregate_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)


class AuditLog(UUIDMixin, Base):
    """Who did what to which object, from which state (PIPL: also who read personal data)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # `GET /orgs/{org_id}/audit-log?action=&actor_id=`: the subtree's entries, newest first
        # (keyset on created_at, id).  A small subtree is read organization by organization
        # (org_id, [filter,] created_at, id); a large one (a district's) walks the filter's
        # entries newest first and stops at the page size ([filter,] created_at, id), which
        # also serves actor_id's ON DELETE SET NULL.
        Index("ix_audit_log_org_created", "org_id", "created_at", "id"),
        Index("ix_audit_log_org_action_created", "org_id", "action", "created_at", "id"),
        Index("ix_audit_log_org_actor_created", "org_id", "actor_id", "created_at", "id"),
        Index("ix_audit_log_action_created", "action", "created_at", "id"),
        Index("ix_audit_log_actor_created", "actor_id", "created_at", "id"),
    )

    org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_client_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(60))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str | None] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RateLimitBucket(Base):
    """A fixed-window counter shared by every worker process."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class SignInFailure(Base):
    """Failed sign-ins counted under one key (a phone with an address, a phone, an address),
    shared by every worker process.  Times are seconds since the epoch.

    `failures` leak away with time (see app/core/signin_guard.py); past the key's allowance
    each further failure locks the key for a growing time (`locked_until`).  A pair row also
    remembers the last successful sign-in from its address (`last_success_at`).  A row may be
    deleted once `expires_at` has passed: it then holds nothing worth remembering."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[float | None] = mapped_column(Float)
    locked_until: Mapped[float | None] = mapped_column(Float)
    last_success_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
