"""All ORM models, imported here so that metadata is complete for Alembic and tests."""

from app.models.activity import Activity, ActivityCredit, Attendance, Signup  # noqa: F401
from app.models.auth import ApiClient, RefreshToken, UserSession
from app.models.checkin import Checkin
from app.models.contribution import Contribution, ContributionAttachment, ContributionDay  # noqa: F401
from app.models.kit import (
    AuditLog,
    IdempotencyRecord,
    OutboxEvent,
    RateLimitBucket,
    SignInFailure,
)
from app.models.organization import Officer, Organization
from app.models.user import IdNumberClaim, User
from app.models.wechat import (
    NotificationDelivery,
    NotificationEventSeen,
    WechatAccessToken,
    WechatAccount,
    WechatBindToken,
)

__all__ = [
    "ApiClient",
    "AuditLog",
    "Checkin",
    "IdNumberClaim",
    "IdempotencyRecord",
    "NotificationDelivery",
    "NotificationEventSeen",
    "Officer",
    "Organization",
    "OutboxEvent",
    "RateLimitBucket",
    "RefreshToken",
    "SignInFailure",
    "User",
    "UserSession",
    "WechatAccessToken",
    "WechatAccount",
    "WechatBindToken",
]
