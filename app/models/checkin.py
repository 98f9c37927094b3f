from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDMixin, VersionMixin


class Checkin(UUIDMixin, TimestampMixin, VersionMixin, Base):
    """登记报到: a member registers with a regional organization (or a branch under it).

    At most one pending or approved check-in per member and organization, enforced by a
    partial unique index on both engines.
    """

    __tablename__ = "checkins"
    __table_args__ = (
        Index(
            "uq_checkins_active_user_org",
            "user_id",
            "org_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'approved')"),
            sqlite_where=text("status IN ('pending', 'approved')"),
        ),
        Index("ix_checkins_org_status_created", "org_id", "status", "created_at", "id"),
        # Behind `GET /orgs/{org_id}/members?floating=`.
        Index(
            "ix_checkins_org_status_floating", "org_id", "status", "floating", "created_at", "id"
        ),
        Index("ix_checkins_user_created", "user_id", "created_at", "id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    note: Mapped[str | None] = mapped_column(String(500))
    # Snapshot at submission: the member's record organization lies outside the district of
    # the organization checked in to (流动党员).
    floating: Mapped[bool] = mapped_column(default=False)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    decision_comment: Mapped[str | None] = mapped_column(String(500))
    ended_at: Mapped[datetime | None]
