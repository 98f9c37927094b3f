"""活动共搞: activities hosted by an organization (with co-hosts), sign-ups with a waitlist,
on-site attendance and the service hours it credits.

Counters that concurrent requests change (`confirmed_count`, `waitlist_count`,
`waitlist_seq`) live on the activity row and only ever move with one conditional UPDATE;
the partial unique index on sign-ups keeps one active sign-up per member and activity.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UTCDateTime, UUIDMixin, utcnow


class ActivityStatus(StrEnum):
    draft = "draft"
    published = "published"
    completed = "completed"
    cancelled = "cancelled"


class Visibility(StrEnum):
    org = "org"
    region = "region"
    public = "public"


class Post(StrEnum):
    """The dual posts (双岗位): social service post and enterprise duty post."""

    community = "community"
    enterprise = "enterprise"


class SignupStatus(StrEnum):
    confirmed = "confirmed"
    waitlisted = "waitlisted"
    cancelled = "cancelled"


class AttendanceStatus(StrEnum):
    # A check-in sent late (or after the end) waits for an officer of the host to confirm it.
    pending = "pending"
    present = "present"
    absent = "absent"


class AttendanceMethod(StrEnum):
    code = "code"
    geo = "geo"
    manual = "manual"


class CoHostStatus(StrEnum):
    """A co-host named outside the naming officer's subtree is invited (`pending`) until an
    officer of it (or above) accepts or declines; one inside it is `accepted` at once.  Only
    accepted co-hosts open an activity to their members."""

    pending = "pending"
    accepted = "accepted"
    declined = "declined"


activity_co_hosts = Table(
    "activity_co_hosts",
    Base.metadata,
    Column(
        "activity_id",
        ForeignKey("activities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "org_id",
        ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("status", String(10), nullable=False, server_default=CoHostStatus.accepted.value),
    Column("invited_by", ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("decided_by", ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    # `GET /orgs/{org_id}/co-host-invitations?status=`: an organization's invitations,
    # oldest first (keyset on created_at, activity_id).
    Index(
        "ix_activity_co_hosts_org_status_created", "org_id", "status", "created_at", "activity_id"
    ),
)


class Activity(UUIDMixin, TimestampMixin, Base):
    __tablename__ = "activities"
    __table_args__ = (
        # The member list: published, upcoming, ordered by start.
        Index("ix_activities_status_starts", "status", "starts_at", "id"),
        Index("ix_activities_org_starts", "org_id", "starts_at", "id"),
        Index("ix_activities_district_starts", "district_id", "starts_at", "id"),
        Index("ix_activities_category_starts", "category", "starts_at", "id"),
        Index("ix_activities_lat_lng", "lat", "lng"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="RESTRICT"))
    # The district (or, lacking one, the root) above the host: `region` visibility reaches
    # every member approved anywhere under it.
    district_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT")
    )
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(40))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    location_name: Mapped[str] = mapped_column(String(120))
    location_address: Mapped[str | None] = mapped_column(String(200))
    lat: Mapped[float]
    lng: Mapped[float]
    radius_m: Mapped[int]
    capacity: Mapped[int | None]
    signup_deadline: Mapped[datetime | None]
    visibility: Mapped[str] = mapped_column(String(10))
    service_hours: Mapped[float] = mapped_column(default=0.0)
    post: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(12), default=ActivityStatus.draft.value)

    confirmed_count: Mapped[int] = mapped_column(default=0)
    waitlist_count: Mapped[int] = mapped_column(default=0)
    # Monotonic: each waitlisted sign-up takes the next number (arrival order).
    waitlist_seq: Mapped[int] = mapped_column(default=0)

    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    published_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(500))


class Signup(UUIDMixin, Base):
    __tablename__ = "activity_signups"
    __table_args__ = (
        Index(
            "uq_activity_signups_active_activity_user",
            "activity_id",
            "user_id",
            unique=True,
            postgresql_where=text("status IN ('confirmed', 'waitlisted')"),
            sqlite_where=text("status IN ('confirmed', 'waitlisted')"),
        ),
        Index("ix_activity_signups_activity_status_seq", "activity_id", "status", "waitlist_seq"),
        Index("ix_activity_signups_activity_created", "activity_id", "created_at", "id"),
        Index("ix_activity_signups_user_created", "user_id", "created_at", "id"),
    )

    activity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(12))
    # Arrival order on the waitlist; kept after promotion for the record.
    waitlist_seq: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    promoted_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class Attendance(UUIDMixin, Base):
    """One member's attendance at one activity, and how it was established.

    A check-in sent late (`delay_seconds` past the threshold, or after the activity ended)
    is `pending` until officers of the host confirm it (present) or reject it (absent)
    through the review mechanism (app/review): it credits nothing before."""

    __tablename__ = "activity_attendance"
    __table_args__ = (
        UniqueConstraint("activity_id", "user_id"),
        # The officers' queue of late check-ins of a subtree: (org, status), oldest first.
        Index(
            "ix_activity_attendance_org_status_recorded", "org_id", "status", "recorded_at", "id"
        ),
    )

    activity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The activity's host (it never changes): whose officers confirm a pending check-in.
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10))
    method: Mapped[str] = mapped_column(String(10))
    # When the member was there (the scan, possibly sent later), and when we learnt it.
    attended_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    accuracy_m: Mapped[float | None]
    marked_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # How long after the scan the server received it (code and location check-ins).
    delay_seconds: Mapped[int | None]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    decision_comment: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ActivityCredit(UUIDMixin, Base):
    """Service hours credited for attending (谁组织谁记录): an approved contribution of the
    activity's post, once per member and activity; the contributions module reads it."""

    __tablename__ = "activity_credits"
    __table_args__ = (
        UniqueConstraint("activity_id", "user_id"),
        Index("ix_activity_credits_user_occurred", "user_id", "occurred_on"),
    )

    activity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    post: Mapped[str] = mapped_column(String(12))
    hours: Mapped[float]
    # The activity's local (Asia/Shanghai) date.
    occurred_on: Mapped[date]
    status: Mapped[str] = mapped_column(String(12), default="approved")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
