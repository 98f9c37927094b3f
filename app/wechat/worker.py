"""The notifications worker: outbox events and upcoming activities → WeChat subscribe messages.

One pass (`NotificationWorker.run_once`) does three things, each in short transactions of its
own and never with a transaction open while WeChat is called:

1. fan-out: outbox events of the topics we notify on, not yet seen by this worker, become
   delivery rows, one per (event, member, kind) thanks to a unique constraint, so that two
   workers fanning out the same event create each delivery once;
2. reminders: members confirmed for a published activity that starts within the reminder lead
   get one reminder delivery per activity (same unique constraint);
3. delivery: a batch of due deliveries is claimed with one conditional UPDATE (rows pending
   and due, or claimed by a worker whose claim expired; on PostgreSQL the candidates are
   picked with FOR UPDATE SKIP LOCKED), each message is sent, then marked.

At-least-once: a worker that dies between sending and marking leaves its claim to expire;
the next worker takes the delivery over and counts the take-over in `recoveries`.  A delivery
taken over a second time is marked failed without sending, so an uncertain message goes out
at most twice.  43101 (not subscribed) is recorded and not retried; transient failures
(-1, 5xx, timeouts, 45011) are retried with exponential backoff up to a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock
from app.core.crypto import decrypt
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.errors import WechatError, WechatNotSubscribed
from app.models.activity import Activity, ActivityStatus, Signup, SignupStatus
from app.models.kit import OutboxEvent
from app.models.wechat import NotificationDelivery, NotificationEventSeen, WechatAccount
from app.wechat import notifications as n
from app.wechat import service as wechat_service

logger = logging.getLogger("quyu.wechat.worker")

# Events older than this are not notified any more (and are not scanned).
LOOKBACK = timedelta(days=3)
MAX_BACKOFF = timedelta(hours=1)


@dataclass
class PassStats:
    planned: int = 0
    claimed: int = 0
    sent: int = 0
    unsubscribed: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.planned or self.claimed)


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    user_id: uuid.UUID
    template_id: str
    page: str | None
    data: dict[str, str]
    attempts: int
    recoveries: int


@dataclass
class NotificationWorker:
    client: WechatClient
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    name: str = field(
        default_factory=lambda: f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    batch: int = 50
    lease_seconds: float | None = None
    retry_base_seconds: float = 15.0
    # Called after a message is sent and before it is marked: a seam for crash tests.
    after_send: Callable[[uuid.UUID], None] | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds or self.settings.wechat_worker_lease_seconds)

    # --- one pass ------------------------------------------------------------------------

    async def run_once(self) -> PassStats:
        stats = PassStats()
        stats.planned += await self.fan_out()
        stats.planned += await self.plan_reminders()
        await self.deliver(stats)
        return stats

    async def run_forever(self, stop: asyncio.Event) -> None:
        logger.info("notifications worker started", extra={"worker": self.name})
        last_purge = datetime.min.replace(tzinfo=clock.now().tzinfo)
        while not stop.is_set():
            busy = False
            try:
                busy = (await self.run_once()).busy
                if clock.now() - last_purge > timedelta(hours=1):
                    async with self.sessionmaker() as session, session.begin():
                        await wechat_service.purge_bind_tokens(session, older_than=timedelta(1))
                    last_purge = clock.now()
            except Exception:
                logger.exception("notifications pass failed", extra={"worker": self.name})
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.wechat_worker_poll_seconds)
        logger.info("notifications worker stopped", extra={"worker": self.name})

    # --- planning --------------------------------------------------------------------------

    def _insert(self, session: AsyncSession) -> Any:
        dialect = session.get_bind().dialect.name
        return postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def _bound(self, session: AsyncSession, user_ids: set[uuid.UUID]) -> set[uuid.UUID]:
        if not user_ids:
            return set()
        rows = await session.execute(
            select(WechatAccount.user_id).where(WechatAccount.user_id.in_(user_ids))
        )
        return set(rows.scalars())

    async def _add_deliveries(
        self,
        session: AsyncSession,
        planned: Sequence[n.Planned],
        *,
        ref: str,
        event_id: uuid.UUID | None,
    ) -> int:
        bound = await self._bound(session, {p.user_id for p in planned})
        rows: list[dict[str, Any]] = []
        now = clock.now()
        for p in planned:
            template = n.template_for(self.settings, p.kind)
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
                    "status": "pending",
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
            self._insert(session)(NotificationDelivery)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["ref", "user_id", "kind"])
            .returning(NotificationDelivery.id)
        )
        return len(result.all())

    async def fan_out(self) -> int:
        """Outbox events not seen yet → deliveries; the event is then marked seen."""
        now = clock.now()
        created = 0
        async with self.sessionmaker() as session, session.begin():
            events = (
                await session.execute(
                    select(
                        OutboxEvent.id,
                        OutboxEvent.topic,
                        OutboxEvent.payload,
                        OutboxEvent.created_at,
                    )
                    .where(
                        OutboxEvent.topic.in_(n.TOPICS),
                        OutboxEvent.created_at >= now - LOOKBACK,
                        ~exists().where(NotificationEventSeen.event_id == OutboxEvent.id),
                    )
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                    .limit(self.batch)
                )
            ).all()
            for event in events:
                planned = await n.plan(session, event.topic, event.payload, event.created_at)
                created += await self._add_deliveries(
                    session, planned, ref=str(event.id), event_id=event.id
                )
                await session.execute(
                    self._insert(session)(NotificationEventSeen)
                    .values(event_id=event.id, processed_at=now)
                    .on_conflict_do_nothing(index_elements=["event_id"])
                )
        return created

    async def plan_reminders(self) -> int:
        """Members confirmed for an activity starting within the lead time: one reminder each.

        Activities in the window are few; for each, the confirmed members with WeChat and no
        reminder yet are found with one anti-join."""
        if n.template_for(self.settings, n.ACTIVITY_REMINDER) is None:
            return 0
        now = clock.now()
        lead = timedelta(minutes=self.settings.wechat_reminder_lead_minutes)
        created = 0
        async with self.sessionmaker() as session, session.begin():
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
                        .limit(self.batch)
                    )
                ).scalars()
                values = n.activity_values(activity, n.ACTIVITY_REMINDER)
                planned = [
                    n.Planned(user_id=user_id, kind=n.ACTIVITY_REMINDER, values=values)
                    for user_id in user_ids
                ]
                created += await self._add_deliveries(session, planned, ref=ref, event_id=None)
        return created

    # --- delivery --------------------------------------------------------------------------

    async def claim(self) -> list[tuple[Claimed, str | None]]:
        """Take up to `batch` due deliveries; with each, the member's openid (None when the
        member has unbound WeChat since)."""
        now = clock.now()
        D = NotificationDelivery
        claimable = or_(
            and_(D.status == "pending", D.next_attempt_at <= now),
            and_(D.status == "sending", D.claimed_until < now),
        )
        candidates = (
            select(D.id)
            .where(claimable)
            .order_by(D.next_attempt_at, D.id)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        async with self.sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    update(D)
                    .where(D.id.in_(candidates.scalar_subquery()), claimable)
                    .values(
                        status="sending",
                        claimed_by=self.name,
                        claimed_until=now + self.lease,
                        attempts=D.attempts + 1,
                        recoveries=D.recoveries + case((D.status == "sending", 1), else_=0),
                        updated_at=now,
                    )
                    .returning(
                        D.id, D.user_id, D.template_id, D.page, D.data, D.attempts, D.recoveries
                    )
                    .execution_options(synchronize_session=False)
                )
            ).all()
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

    async def _mark(self, delivery_id: uuid.UUID, **values: Any) -> bool:
        """Record an outcome, provided the claim is still ours."""
        values.setdefault("claimed_by", None)
        values.setdefault("claimed_until", None)
        async with self.sessionmaker() as session, session.begin():
            done = (
                await session.execute(
                    update(NotificationDelivery)
                    .where(
                        NotificationDelivery.id == delivery_id,
                        NotificationDelivery.status == "sending",
                        NotificationDelivery.claimed_by == self.name,
                    )
                    .values(updated_at=clock.now(), **values)
                    .returning(NotificationDelivery.id)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one_or_none()
        return done is not None

    def _backoff(self, attempts: int) -> timedelta:
        delay = timedelta(seconds=self.retry_base_seconds * 2 ** max(0, attempts - 1))
        return min(delay, MAX_BACKOFF)

    async def deliver(self, stats: PassStats) -> None:
        claimed = await self.claim()
        stats.claimed += len(claimed)
        for delivery, openid in claimed:
            await self._deliver_one(delivery, openid, stats)

    async def _deliver_one(self, d: Claimed, openid: str | None, stats: PassStats) -> None:
        if d.recoveries > 1:
            # Taken over twice: it may have gone out already; never risk a third copy.
            stats.failed += 1
            await self._mark(d.id, status="failed", last_error="unconfirmed_after_recovery")
            return
        if openid is None:
            stats.skipped += 1
            await self._mark(d.id, status="failed", last_error="not_bound")
            return
        try:
            await self.client.send_subscribe_message(
                openid=openid, template_id=d.template_id, data=d.data, page=d.page, retries=0
            )
        except WechatNotSubscribed as exc:
            stats.unsubscribed += 1
            await self._mark(d.id, status="unsubscribed", last_error=f"errcode {exc.errcode}")
            return
        except WechatError as exc:
            error = f"errcode {exc.errcode}" if exc.errcode is not None else exc.code
            if exc.transient and d.attempts < self.settings.wechat_send_max_attempts:
                stats.retried += 1
                await self._mark(
                    d.id,
                    status="pending",
                    next_attempt_at=clock.now() + self._backoff(d.attempts),
                    last_error=error,
                )
            else:
                stats.failed += 1
                logger.warning(
                    "subscribe message failed",
                    extra={"delivery_id": str(d.id), "error": error},
                )
                await self._mark(d.id, status="failed", last_error=error)
            return
        if self.after_send is not None:
            self.after_send(d.id)
        stats.sent += 1
        await self._mark(d.id, status="sent", sent_at=clock.now(), last_error=None)


@dataclass
class BackgroundWorker:
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    async def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def start_in_background(
    client: WechatClient, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> BackgroundWorker:
    """Run the worker inside the API process (QUYU_WECHAT_WORKER_IN_APP=true)."""
    stop = asyncio.Event()
    worker = NotificationWorker(client=client, sessionmaker=sessionmaker, settings=settings)
    task = asyncio.create_task(worker.run_forever(stop), name="wechat-notifications")
    return BackgroundWorker(task=task, stop_event=stop)


async def run_worker(settings: Settings, *, once: bool = False) -> None:
    """`quyu worker`: its own engine and HTTP client; stops cleanly on SIGINT/SIGTERM."""
    import signal

    from app.core.logging import configure_logging
    from app.db.session import create_engine, create_sessionmaker

    configure_logging(settings.log_level)
    engine = create_engine(settings)
    http = WechatClient.new_http_client(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        client = WechatClient(http, settings, sessionmaker)
        worker = NotificationWorker(client=client, sessionmaker=sessionmaker, settings=settings)
        if once:
            stats = await worker.run_once()
            logger.info("notifications pass done", extra={"stats": stats.__dict__})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run_forever(stop)
    finally:
        await http.aclose()
        await engine.dispose()
