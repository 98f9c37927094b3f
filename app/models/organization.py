from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDMixin


class Organization(UUIDMixin, TimestampMixin, Base):
    """A node of the organization tree; `path` is the materialized path of ids from the root.

    `path` is "/<hex id of root>/.../<hex id of this>/" so that a subtree is one indexed
    prefix query on both engines: `path LIKE '<path of top>%'`.
    """

    __tablename__ = "organizations"
    __table_args__ = (
        Index(
            "ix_organizations_path",
            "path",
            postgresql_ops={"path": "text_pattern_ops"},
        ),
        # `GET /orgs` filters (parent_id has its own index, below): kind, kind with
        # region_type, region_type alone, and `near` (a lat/lng bounding box: a range on lat,
        # lng checked inside the index).  `q` (name contains) is a LIKE '%…%' that no btree
        # serves; it only ever narrows rows already limited by scope and the other filters.
        Index("ix_organizations_kind_region_type", "kind", "region_type"),
        Index("ix_organizations_region_type", "region_type"),
        Index("ix_organizations_lat_lng", "lat", "lng"),
    )

    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    level: Mapped[str | None] = mapped_column(String(20))
    region_type: Mapped[str | None] = mapped_column(String(30))
    founding_form: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200))
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    path: Mapped[str] = mapped_column(String(700))
    depth: Mapped[int] = mapped_column(default=0)


class Officer(UUIDMixin, TimestampMixin, Base):
    """An appointment: a user serves an organization as secretary, deputy or worker."""

    __tablename__ = "officers"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    appointed_by: Mapped[str] = mapped_column(String(20))
