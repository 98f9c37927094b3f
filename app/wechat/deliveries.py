"""The delivery rows (`notification_deliveries`): added when a message is planned, claimed in
batches by a worker, marked `attempting` right before each send, marked with the outcome.

One row per (reason, member, kind), held by a unique constraint: `ref` is the outbox event id,
or the activity id for reminders, so two workers planning the same message create it once.

The life of a row (docs/architecture.md, "Subscribe messages"):

    pending -> sending (claimed) -> attempting (about to send) -> sent | unsubscribed | failed
                                                                | pending (retry, backed off)
    sending -> failed (not sent: unbound, or given up) | pending (released by a stopping worker)
    expired claims are taken over: `sending` as it is, nothing counted (no send happened);
    `attempting` with `recoveries` + 1 (a send may have happened)

A claim is one conditional UPDATE (rows pending and due, or claimed by a worker whose claim
expired; on PostgreSQL the candidates are picked with FOR UPDATE SKIP LOCKED).  `attempts`
counts sends that may have happened: it rises in `begin_attempt`, its own committed step
right before the call to WeChat, and nowhere else.  `recoveries` counts those attempts whose
outcome was never recorded (the worker died or lost its claim mid-send): it rises only when an
`attempting` row is taken over, never for the rows of a crashed batch that were not being
sent.  Every step after the claim holds only while the claim is still the worker's own.

Every function works in the session it is given; the worker gives each its own short
transaction (`app.wechat.worker`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import clock
from app.core.crypto import decrypt
from app.db.base import Base
from app.models.wechat import NotificationDelivery, WechatAccount
from app.wechat import notifications as n
from app.wechat import service as wechat_service

# Delivery states: pending -> sending (claimed) -> attempting (a send may happen) -> sent |
# unsubscribed | failed, or pending again (a transient error, to be retried); sending -> failed
# (not sent at all: unbound, or given up) or pending (released by a stopping worker).
PENDING = "pending"
SENDING = "sending"
ATTEMPTING = "attempting"
SENT = "sent"
UNSUBSCRIBED = "unsubscribed"
FAILED = "failed"


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now holds, with what sending it needs.

    `attempts`: sends so far that may have happened; `recoveries`: those of them whose outcome
    was never recorded (counted when the delivery was taken over mid-send)."""

    id: uuid.UUID
    user_id: uuid.UUID
    template_id: str
    page: str | None
    data: dict[str, str]
    attempts: int
    recoveries: int


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed delivery: its new status and error, and for a retry when
    it is due again, for a sent message when it went out."""

    status: str
    last_error: str | None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None


def insert_for(session: AsyncSession, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the session's dialect, which both know to end with ON CONFLICT DO NOTHING."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


async def _bound(session: AsyncSession, user_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `user_ids` with a WeChat user bound."""
    if not user_ids:
        return set()
    rows = await session.execute(
        select(WechatAccount.user_id).where(WechatAccount.user_id.in_(user_ids))
    )
    return set(rows.scalars())


async def add(
    session: AsyncSession,
    settings: Settings,
    planned: Sequence[n.Planned],
    *,
    ref: str,
    event_id: uuid.UUID | None,
) -> int:
    """Rows for the planned messages whose kind has a template and whose member has WeChat;
    those made already for the same reason are left alone.  Returns how many were added."""
    bound = await _bound(session, {p.user_id for p in planned})
    rows: list[dict[str, object]] = []
    now = clock.now()
    for p in planned:
        template = n.template_for(settings, p.kind)
        if template is None or p.user_id not in bound:
            continue
        message = n.render_message(template, p.values)
        rows.append(
            {
                "id": uuid.uuid4(),
                "event_id": event_id,
                "ref": ref,
                "user_id": p.user_id,
                "kind": p.kind,
                "template_id": message.template_id,
                "page": message.page,
                "data": message.data,
                "status": PENDING,
                "attempts": 0,
                "recoveries": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    if not rows:
        return 0
    result = await session.execute(
        insert_for(session, NotificationDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["ref", "user_id", "kind"])
        .returning(NotificationDelivery.id)
    )
    return len(result.all())


async def claim(
    session: AsyncSession, *, worker: str, lease: timedelta, batch: int
) -> list[tuple[Claimed, str | None]]:
    """Take up to `batch` due deliveries for `worker` until `lease` from now; with each, the
    member's openid (None when the member has unbound WeChat since).

    A delivery whose claim expired is taken over: counted in `recoveries` only if it was
    `attempting` (its send may have gone out), as it is if it was merely claimed."""
    now = clock.now()
    D = NotificationDelivery
    claimable = or_(
        and_(D.status == PENDING, D.next_attempt_at <= now),
        and_(D.status.in_((SENDING, ATTEMPTING)), D.claimed_until < now),
    )
    candidates = (
        select(D.id)
        .where(claimable)
        .order_by(D.next_attempt_at, D.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    rows = (
        await session.execute(
            update(D)
            .where(D.id.in_(candidates.scalar_subquery()), claimable)
            .values(
                status=SENDING,
                claimed_by=worker,
                claimed_until=now + lease,
                recoveries=D.recoveries + case((D.status == ATTEMPTING, 1), else_=0),
                updated_at=now,
            )
            .returning(
                D.id,
                D.user_id,
                D.template_id,
                D.page,
                D.data,
                D.attempts,
                D.recoveries,
                D.next_attempt_at,
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    # RETURNING follows no order: sent in the order they fell due, as they were picked.
    rows = sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
    claimed = [
        Claimed(
            id=r.id,
            user_id=r.user_id,
            template_id=r.template_id,
            page=r.page,
            data=dict(r.data),
            attempts=r.attempts,
            recoveries=r.recoveries,
        )
        for r in rows
    ]
    accounts = {
        row.user_id: row.openid_enc
        for row in await session.execute(
            select(WechatAccount.user_id, WechatAccount.openid_enc).where(
                WechatAccount.user_id.in_({c.user_id for c in claimed})
            )
        )
    }
    return [
        (
            c,
            decrypt(accounts[c.user_id], context=wechat_service.OPENID)
            if c.user_id in accounts
            else None,
        )
        for c in claimed
    ]


async def begin_attempt(
    session: AsyncSession, delivery_id: uuid.UUID, *, worker: str, lease: timedelta
) -> int | None:
    """Mark a claimed delivery `attempting` and count the attempt, right before its send; the
    claim is renewed for `lease` from now, so that it covers the send.  Returns the attempt's
    number, or None when the claim is no longer `worker`'s (it expired and another worker took
    the delivery over): then it must not be sent.

    The caller commits this before calling WeChat: a worker that dies after this point leaves
    a row that says a send may have happened."""
    now = clock.now()
    D = NotificationDelivery
    return (
        await session.execute(
            update(D)
            .where(D.id == delivery_id, D.status == SENDING, D.claimed_by == worker)
            .values(
                status=ATTEMPTING,
                attempts=D.attempts + 1,
                claimed_until=now + lease,
                updated_at=now,
            )
            .returning(D.attempts)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()


async def release(session: AsyncSession, delivery_ids: Sequence[uuid.UUID], *, worker: str) -> int:
    """Hand back claimed deliveries not attempted yet (a stopping worker): pending again, due
    as they were, nothing counted.  Returns how many were released."""
    if not delivery_ids:
        return 0
    D = NotificationDelivery
    rows = await session.execute(
        update(D)
        .where(D.id.in_(delivery_ids), D.status == SENDING, D.claimed_by == worker)
        .values(status=PENDING, claimed_by=None, claimed_until=None, updated_at=clock.now())
        .returning(D.id)
        .execution_options(synchronize_session=False)
    )
    return len(rows.all())


async def mark(
    session: AsyncSession, delivery_id: uuid.UUID, *, worker: str, outcome: Outcome
) -> bool:
    """Record an outcome and release the claim, provided the claim is still `worker`'s (the
    delivery `attempting`, or only claimed when it is settled without a send)."""
    values: dict[str, object] = {
        "status": outcome.status,
        "last_error": outcome.last_error,
        "claimed_by": None,
        "claimed_until": None,
        "updated_at": clock.now(),
    }
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    if outcome.sent_at is not None:
        values["sent_at"] = outcome.sent_at
    done = (
        await session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.id == delivery_id,
                NotificationDelivery.status.in_((SENDING, ATTEMPTING)),
                NotificationDelivery.claimed_by == worker,
            )
            .values(values)
            .returning(NotificationDelivery.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    return done is not None
