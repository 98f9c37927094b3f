"""WeChat mini-program: bound WeChat users, pending bind tokens, the cached access token, and
the delivery records of subscribe messages.

OpenIDs are personal data: they are stored AES-GCM encrypted, next to an HMAC blind index
that serves look-ups and uniqueness.  The session_key is stored encrypted and never leaves.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDMixin, utcnow


class WechatAccount(UUIDMixin, TimestampMixin, Base):
    """One WeChat user (openid of our mini-program) bound to one account, and vice versa."""

    __tablename__ = "wechat_accounts"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    openid_index: Mapped[str] = mapped_column(String(64), unique=True)
    openid_enc: Mapped[bytes] = mapped_column(LargeBinary)
    unionid_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    session_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    last_login_at: Mapped[datetime] = mapped_column(default=utcnow)


class WechatBindToken(UUIDMixin, Base):
    """A short-lived, single-use proof that the caller is this WeChat user (stored hashed)."""

    __tablename__ = "wechat_bind_tokens"
    __table_args__ = (Index("ix_wechat_bind_tokens_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    openid_index: Mapped[str] = mapped_column(String(64))
    openid_enc: Mapped[bytes] = mapped_column(LargeBinary)
    unionid_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    session_key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WechatAccessToken(Base):
    """The mini-program's access token, shared by every process.

    `lease_until`/`lease_owner` make refreshing a one-at-a-time job: a process refreshes only
    after winning a conditional UPDATE on this row; the others keep using the old token (still
    valid within the refresh margin) or wait for the new one.
    """

    __tablename__ = "wechat_access_tokens"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationEventSeen(Base):
    """Outbox events the WeChat notifier has turned into deliveries (its own progress)."""

    __tablename__ = "notification_events_seen"

    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("outbox_events.id", ondelete="CASCADE"), primary_key=True
    )
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDelivery(UUIDMixin, TimestampMixin, Base):
    """One subscribe message to one member for one reason, sent at most once per reason.

    `ref` is the outbox event id, or the activity id for reminders; with `user_id` and `kind`
    it is unique, so an event never notifies a member twice.  Claims expire: a worker that
    dies while holding one leaves it to another after `claimed_until`.  `attempts` counts sends
    that may have happened (each marked `attempting`, committed, right before it); `recoveries`
    counts those whose outcome was never recorded (taken over while `attempting`), so that an
    uncertain send is repeated at most `wechat_send_max_unconfirmed` - 1 times
    (`app.wechat.deliveries`).
    """

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("ref", "user_id", "kind"),
        Index("ix_notification_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_notification_deliveries_user_id", "user_id"),
    )

    event_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("outbox_events.id", ondelete="SET NULL")
    )
    ref: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    template_id: Mapped[str] = mapped_column(String(128))
    page: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending -> sending (claimed) -> attempting (being sent) -> sent | unsubscribed | failed,
    # or pending (transient error); sending -> failed (not sent) | pending (handed back)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    recoveries: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(120))
