from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, UUIDMixin, VersionMixin, utcnow


class User(UUIDMixin, TimestampMixin, VersionMixin, Base):
    __tablename__ = "users"

    phone: Mapped[str] = mapped_column(String(11), unique=True)
    name: Mapped[str] = mapped_column(String(50))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    gender: Mapped[str | None] = mapped_column(String(10))
    party_status: Mapped[str | None] = mapped_column(String(20))
    joined_party_on: Mapped[date | None]
    record_org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    record_org_name: Mapped[str | None] = mapped_column(String(100))
    employer: Mapped[str | None] = mapped_column(String(100))
    post_title: Mapped[str | None] = mapped_column(String(50))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    # 居民身份证号码: AES-GCM ciphertext, an HMAC blind index for uniqueness and look-up,
    # and the masked form that is the only one ever returned.
    id_number_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    id_number_index: Mapped[str | None] = mapped_column(String(64), unique=True)
    id_number_masked: Mapped[str | None] = mapped_column(String(18))

    @property
    def role(self) -> str:
        return "admin" if self.is_admin else "member"


class IdNumberClaim(Base):
    """An ID number a member entered that another account holds already.

    The member is answered as if it had been saved (and sees it masked on their profile), so
    that `PATCH /me` cannot tell anyone whether a number belongs to a member; the number is
    kept encrypted, not on the account, until an officer settles which account it belongs
    to.  One claim per member; entering another number replaces it."""

    __tablename__ = "id_number_claims"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    holder_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_index: Mapped[str] = mapped_column(String(64), index=True)
    id_number_masked: Mapped[str] = mapped_column(String(18))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
