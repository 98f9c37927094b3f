"""Which outbox events become which subscribe messages, and what they say.

A message kind has a template (its id, from settings, is what WeChat knows) and a field
mapping: template key → one of the named values below.  Template ids, pages and mappings are
settings (`QUYU_WECHAT_TEMPLATES`, JSON); the mappings below are the defaults.  A kind without
a template id is not sent at all.

Events carry ids and states only; the values are read from the database when the event is
turned into deliveries, then rendered and cut to WeChat's limits (`fields.render`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, WechatTemplate
from app.integrations.wechat.fields import Value, render
from app.models.activity import Activity
from app.models.checkin import Checkin
from app.models.organization import Organization

CHECKIN_DECISION = "checkin_decision"
CONTRIBUTION_DECISION = "contribution_decision"
WAITLIST_PROMOTED = "waitlist_promoted"
ACTIVITY_CANCELLED = "activity_cancelled"
ACTIVITY_REMINDER = "activity_reminder"

KINDS = (
    CHECKIN_DECISION,
    CONTRIBUTION_DECISION,
    WAITLIST_PROMOTED,
    ACTIVITY_CANCELLED,
    ACTIVITY_REMINDER,
)

# kind -> (template key -> value name)
DEFAULT_FIELDS: dict[str, dict[str, str]] = {
    CHECKIN_DECISION: {
        "thing1": "org_name",
        "phrase2": "result",
        "thing3": "comment",
        "time4": "decided_at",
    },
    CONTRIBUTION_DECISION: {
        "thing1": "title",
        "phrase2": "result",
        "thing3": "comment",
        "time4": "decided_at",
    },
    WAITLIST_PROMOTED: {
        "thing1": "activity_title",
        "time2": "starts_at",
        "thing3": "location",
        "phrase4": "result",
    },
    ACTIVITY_CANCELLED: {
        "thing1": "activity_title",
        "time2": "starts_at",
        "thing3": "reason",
    },
    ACTIVITY_REMINDER: {
        "thing1": "activity_title",
        "time2": "starts_at",
        "thing3": "location",
    },
}

DEFAULT_PAGES: dict[str, str] = {
    CHECKIN_DECISION: "pages/checkins/index",
    CONTRIBUTION_DECISION: "pages/contributions/detail?id={contribution_id}",
    WAITLIST_PROMOTED: "pages/activities/detail?id={activity_id}",
    ACTIVITY_CANCELLED: "pages/activities/detail?id={activity_id}",
    ACTIVITY_REMINDER: "pages/activities/detail?id={activity_id}",
}

_RESULTS = {
    "approved": "已通过",
    "rejected": "未通过",
    "returned": "已退回",
}

CHECKIN_TOPICS = ("checkin.approved", "checkin.rejected")
CONTRIBUTION_TOPICS = ("contribution.approved", "contribution.rejected", "contribution.returned")
PROMOTED_TOPIC = "activity.signup.promoted"
SIGNUP_CANCELLED_TOPIC = "activity.signup.cancelled"
TOPICS = (*CHECKIN_TOPICS, *CONTRIBUTION_TOPICS, PROMOTED_TOPIC, SIGNUP_CANCELLED_TOPIC)


@dataclass(frozen=True)
class Planned:
    """One message to one member, before its template is applied."""

    user_id: uuid.UUID
    kind: str
    values: Mapping[str, Value]


class ActivityFacts(NamedTuple):
    """What an activity's messages say about it."""

    id: uuid.UUID
    title: str
    starts_at: datetime
    location_name: str
    cancel_reason: str | None = None


@dataclass(frozen=True)
class Rendered:
    template_id: str
    page: str | None
    data: dict[str, str]


def template_for(settings: Settings, kind: str) -> WechatTemplate | None:
    """The configured template of `kind`, with default fields and page; None when unset."""
    configured = settings.wechat_templates.get(kind)
    if configured is None or not configured.template_id:
        return None
    return WechatTemplate(
        template_id=configured.template_id,
        page=configured.page if configured.page is not None else DEFAULT_PAGES.get(kind),
        fields=configured.fields or DEFAULT_FIELDS[kind],
    )


def render_message(template: WechatTemplate, values: Mapping[str, Value]) -> Rendered:
    fields = template.fields or {}
    data = {key: render(key, values.get(name)) for key, name in fields.items()}
    page = None
    if template.page:
        text_values = {k: "" if v is None else str(v) for k, v in values.items()}
        try:
            page = template.page.format_map(text_values)
        except (KeyError, ValueError, IndexError):
            page = template.page.split("?", 1)[0]
    return Rendered(template_id=template.template_id, page=page, data=data)


def _uuid(payload: Mapping[str, Any], key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(payload.get(key)))
    except ValueError:
        return None


async def plan(
    session: AsyncSession, topic: str, payload: Mapping[str, Any], occurred_at: datetime
) -> list[Planned]:
    """The messages one outbox event asks for (none for topics that notify nobody)."""
    user_id = _uuid(payload, "user_id")
    if user_id is None:
        return []
    if topic in CHECKIN_TOPICS:
        return await _checkin(session, user_id, payload, occurred_at)
    if topic in CONTRIBUTION_TOPICS:
        return _contribution(user_id, topic, payload, occurred_at)
    if topic == PROMOTED_TOPIC:
        return await _activity(session, user_id, WAITLIST_PROMOTED, payload)
    if topic == SIGNUP_CANCELLED_TOPIC and payload.get("reason") == "activity_cancelled":
        return await _activity(session, user_id, ACTIVITY_CANCELLED, payload)
    return []


async def _checkin(
    session: AsyncSession, user_id: uuid.UUID, payload: Mapping[str, Any], occurred_at: datetime
) -> list[Planned]:
    checkin_id = _uuid(payload, "checkin_id")
    row = (
        await session.execute(
            select(Checkin.status, Checkin.decided_at, Checkin.decision_comment, Organization.name)
            .join(Organization, Organization.id == Checkin.org_id)
            .where(Checkin.id == checkin_id)
        )
    ).one_or_none()
    if row is None:
        return []
    state = str(payload.get("to_state") or row.status)
    return [
        Planned(
            user_id=user_id,
            kind=CHECKIN_DECISION,
            values={
                "checkin_id": str(checkin_id),
                "org_name": row.name,
                "result": _RESULTS.get(state, state),
                "comment": row.decision_comment,
                "decided_at": row.decided_at or occurred_at,
            },
        )
    ]


def _contribution(
    user_id: uuid.UUID, topic: str, payload: Mapping[str, Any], occurred_at: datetime
) -> list[Planned]:
    """From the event alone: the contributions module puts what a message needs in it."""
    state = topic.rsplit(".", 1)[1]
    comment = payload.get("reason") or payload.get("comment")
    return [
        Planned(
            user_id=user_id,
            kind=CONTRIBUTION_DECISION,
            values={
                "contribution_id": str(payload.get("contribution_id") or ""),
                "title": str(payload.get("title") or "双岗位工作记录"),
                "result": _RESULTS.get(state, state),
                "comment": str(comment) if comment else None,
                "decided_at": occurred_at,
                "hours": payload.get("hours"),
            },
        )
    ]


async def _activity(
    session: AsyncSession, user_id: uuid.UUID, kind: str, payload: Mapping[str, Any]
) -> list[Planned]:
    activity_id = _uuid(payload, "activity_id")
    row = (
        await session.execute(
            select(
                Activity.id,
                Activity.title,
                Activity.starts_at,
                Activity.location_name,
                Activity.cancel_reason,
            ).where(Activity.id == activity_id)
        )
    ).one_or_none()
    if row is None:
        return []
    facts = ActivityFacts(
        id=row.id,
        title=row.title,
        starts_at=row.starts_at,
        location_name=row.location_name,
        cancel_reason=row.cancel_reason,
    )
    return [Planned(user_id=user_id, kind=kind, values=activity_values(facts, kind))]


def activity_values(activity: ActivityFacts, kind: str) -> dict[str, Value]:
    return {
        "activity_id": str(activity.id),
        "activity_title": activity.title,
        "starts_at": activity.starts_at,
        "location": activity.location_name,
        "reason": activity.cancel_reason,
        "result": "候补成功" if kind == WAITLIST_PROMOTED else None,
    }
