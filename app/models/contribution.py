"""奉献双岗位: what members did at their enterprise duty post and their social service post,
with evidence files, reviewed by the officers of the organization's subtree.

Hours are stored as whole half-hours (`half_hours`), so that sums are exact integers on both
engines; the API speaks hours (`half_hours / 2`).

Activity credits (app/models/activity.py, ActivityCredit) stay in their own table; the
contributions module reads them next to these rows (UNION ALL) as approved records of source
`activity`, so a credit is never copied and cannot drift from its attendance.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDMixin, VersionMixin, utcnow


class ContributionStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    returned = "returned"
    withdrawn = "withdrawn"


class ContributionSource(StrEnum):
    manual = "manual"
    activity = "activity"


# The states whose hours count against the daily limit (a returned record may come back).
ACTIVE_STATES = (
    ContributionStatus.pending.value,
    ContributionStatus.approved.value,
    ContributionStatus.returned.value,
)

MAX_ATTACHMENTS = 9


class Contribution(UUIDMixin, TimestampMixin, VersionMixin, Base):
    __tablename__ = "contributions"
    __table_args__ = (
        CheckConstraint("half_hours > 0 AND half_hours <= 48", name="half_hours_range"),
        CheckConstraint(
            f"attachment_count >= 0 AND attachment_count <= {MAX_ATTACHMENTS}",
            name="attachment_count_range",
        ),
        # Officers' queue of a subtree: (org, status) then oldest first.
        Index("ix_contributions_org_status_created", "org_id", "status", "created_at", "id"),
        # The pending queue of a large subtree: walk pending records oldest first and keep
        # those of the subtree, stopping at the page size.
        Index(
            "ix_contributions_pending_created",
            "created_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Statistics: approved hours of a subtree in a date range (index-only on PostgreSQL).
        Index(
            "ix_contributions_org_status_occurred",
            "org_id",
            "status",
            "occurred_on",
            postgresql_include=["post", "half_hours"],
        ),
        # My contributions, newest first; the per-member-day sum of the daily limit.
        Index("ix_contributions_user_created", "user_id", "created_at", "id"),
        Index("ix_contributions_user_occurred", "user_id", "occurred_on"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    post: Mapped[str] = mapped_column(String(12))
    category: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    occurred_on: Mapped[date]
    half_hours: Mapped[int]
    status: Mapped[str] = mapped_column(String(12), default=ContributionStatus.pending.value)
    source: Mapped[str] = mapped_column(String(10), default=ContributionSource.manual.value)
    # An attendance credit of the same member and day existed when it was (re)submitted.
    possible_duplicate: Mapped[bool] = mapped_column(default=False)
    attachment_count: Mapped[int] = mapped_column(default=0)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    decision_comment: Mapped[str | None] = mapped_column(String(500))


class ContributionDay(Base):
    """One row per member and day: the lock that serialises the daily-limit check.

    Whoever adds hours to a day first upserts this row (PostgreSQL: INSERT … ON CONFLICT DO
    UPDATE takes its row lock until commit; SQLite: writers are serialised by BEGIN
    IMMEDIATE), then sums the day's records.  Two concurrent submissions for the same day
    therefore run one after the other, and the second sees the first's hours."""

    __tablename__ = "contribution_days"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    touched_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContributionAttachment(UUIDMixin, Base):
    """An evidence file; the bytes live in the storage (app/integrations/storage.py)."""

    __tablename__ = "contribution_attachments"
    __table_args__ = (Index("ix_contribution_attachments_contribution", "contribution_id"),)

    contribution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("contributions.id", ondelete="CASCADE")
    )
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    original_name: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
