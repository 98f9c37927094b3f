"""Which deliveries a worker pass plans: from outbox events, and reminders before activities.

1. fan-out: outbox events of the topics we notify on, not yet seen by the worker, become
   delivery rows; each event is then marked seen;
2. reminders: members confirmed for a published activity that starts within the reminder lead
   get one reminder delivery per activity.

Either way a message is planned once per (reason, member, kind): `app.wechat.deliveries`.
Every function works in the session it is given; the worker gives each its own short
transaction (`app.wechat.worker`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import clock
from app.models.activity import Activity, ActivityStatus, Signup, SignupStatus
from app.models.kit import OutboxEvent
from app.models.wechat import NotificationDelivery, NotificationEventSeen, WechatAccount
from app.wechat import deliveries
from app.wechat import notifications as n

# Events older than this are not notified any more (and are not scanned).
LOOKBACK = timedelta(days=3)


async def fan_out(session: AsyncSession, settings: Settings, *, batch: int) -> int:
    """Up to `batch` outbox events not seen yet → deliveries; each event is then marked seen.
    Returns how many deliveries were added."""
    now = clock.now()
    created = 0
    events = (
        await session.execute(
            select(OutboxEvent.id, OutboxEvent.topic, OutboxEvent.payload, OutboxEvent.created_at)
            .where(
                OutboxEvent.topic.in_(n.TOPICS),
                OutboxEvent.created_at >= now - LOOKBACK,
                ~exists().where(NotificationEventSeen.event_id == OutboxEvent.id),
            )
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
            .limit(batch)
        )
    ).all()
    for event in events:
        planned = await n.plan(session, event.topic, event.payload, event.created_at)
        created += await deliveries.add(
            session, settings, planned, ref=str(event.id), event_id=event.id
        )
        await session.execute(
            deliveries.insert_for(session, NotificationEventSeen)
            .values(event_id=event.id, processed_at=now)
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
    return created


def reminders_enabled(settings: Settings) -> bool:
    """Reminders are sent only when their template is configured."""
    return n.template_for(settings, n.ACTIVITY_REMINDER) is not None


async def plan_reminders(session: AsyncSession, settings: Settings, *, batch: int) -> int:
    """Members confirmed for an activity starting within the lead time: one reminder each.

    Activities in the window are few; for each, the confirmed members with WeChat and no
    reminder yet (up to `batch`) are found with one anti-join.  Returns how many deliveries
    were added."""
    now = clock.now()
    lead = timedelta(minutes=settings.wechat_reminder_lead_minutes)
    created = 0
    activities = (
        await session.execute(
            select(Activity.id, Activity.title, Activity.starts_at, Activity.location_name)
            .where(
                Activity.status == ActivityStatus.published.value,
                Activity.starts_at > now,
                Activity.starts_at <= now + lead,
            )
            .order_by(Activity.starts_at, Activity.id)
        )
    ).all()
    for activity in activities:
        ref = str(activity.id)
        user_ids = (
            await session.execute(
                select(Signup.user_id)
                .join(WechatAccount, WechatAccount.user_id == Signup.user_id)
                .where(
                    Signup.activity_id == activity.id,
                    Signup.status == SignupStatus.confirmed.value,
                    ~exists().where(
                        NotificationDelivery.ref == ref,
                        NotificationDelivery.user_id == Signup.user_id,
                        NotificationDelivery.kind == n.ACTIVITY_REMINDER,
                    ),
                )
                .limit(batch)
            )
        ).scalars()
        facts = n.ActivityFacts(
            id=activity.id,
            title=activity.title,
            starts_at=activity.starts_at,
            location_name=activity.location_name,
        )
        values = n.activity_values(facts, n.ACTIVITY_REMINDER)
        planned = [
            n.Planned(user_id=user_id, kind=n.ACTIVITY_REMINDER, values=values)
            for user_id in user_ids
        ]
        created += await deliveries.add(session, settings, planned, ref=ref, event_id=None)
    return created
