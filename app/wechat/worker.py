"""The notifications worker: outbox events and upcoming activities → WeChat subscribe messages.

One pass (`NotificationWorker.run_once`) does three things, each in short transactions of its
own and never with a transaction open while WeChat is called:

1. fan-out and 2. reminders plan delivery rows (`app.wechat.planning`), each message once
   per (reason, member, kind) thanks to a unique constraint, so that two workers planning
   the same message create it once;
3. delivery: a batch of due deliveries is claimed (`app.wechat.deliveries`); each one is
   then marked `attempting` (its attempt counted, committed), sent (`app.wechat.sending`),
   and marked with the outcome, one after the other.

At-least-once: a worker that dies leaves its claims to expire and the next worker takes the
deliveries over.  Only the one it was sending (`attempting`) may have gone out: its take-over
counts in `recoveries`; the others of the batch are claimed again as if new.  A delivery
whose sends ended unconfirmed `wechat_send_max_unconfirmed` times (default 2) is failed
without sending, so a message that may have gone out is repeated at most once, and a message
is never given up because another delivery's send, or a batch, was interrupted.

A worker asked to stop (SIGTERM) finishes the send in progress, marks it, hands the rest of
its batch back (pending again, nothing counted) and returns: stopping takes at most one send
(`wechat_timeout_seconds`) and a few short transactions.

The worker runs as its own process (`quyu worker`, `app.wechat.runner`) or inside the API
process (`start_in_background`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock
from app.db.session import separate_transaction
from app.integrations.wechat.client import WechatClient
from app.wechat import deliveries, planning, sending
from app.wechat import service as wechat_service
from app.wechat.deliveries import Claimed

logger = logging.getLogger("quyu.wechat.worker")

# Bind tokens expired longer than this ago are purged, at most once an hour.
BIND_TOKEN_RETENTION = timedelta(days=1)
PURGE_EVERY = timedelta(hours=1)


@dataclass
class PassStats:
    planned: int = 0
    claimed: int = 0
    sent: int = 0
    unsubscribed: int = 0
    retried: int = 0
    failed: int = 0
    skipped: int = 0
    # Claims handed back unsent by a stopping worker, and claims another worker took over.
    released: int = 0
    lost: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.planned or self.claimed)

    def count(self, tally: sending.Tally) -> None:
        setattr(self, tally, getattr(self, tally) + 1)


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
    # Set when the worker is asked to stop: the batch in hand is handed back.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

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
        self.stopping = stop
        last_purge = datetime.min.replace(tzinfo=clock.now().tzinfo)
        while not stop.is_set():
            busy = False
            try:
                busy = (await self.run_once()).busy
                if clock.now() - last_purge > PURGE_EVERY:
                    await self.purge()
                    last_purge = clock.now()
            except Exception:
                logger.exception("notifications pass failed", extra={"worker": self.name})
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.wechat_worker_poll_seconds)
        logger.info("notifications worker stopped", extra={"worker": self.name})

    async def purge(self) -> None:
        async with separate_transaction(
            self.sessionmaker, why="a worker has no request: housekeeping of bind tokens"
        ) as session:
            await wechat_service.purge_bind_tokens(session, older_than=BIND_TOKEN_RETENTION)

    # --- planning --------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """Outbox events not seen yet → deliveries; the event is then marked seen."""
        async with separate_transaction(
            self.sessionmaker, why="a worker has no request: one batch of outbox events"
        ) as session:
            return await planning.fan_out(session, self.settings, batch=self.batch)

    async def plan_reminders(self) -> int:
        """Members confirmed for an activity starting within the lead time: one reminder each."""
        if not planning.reminders_enabled(self.settings):
            return 0
        async with separate_transaction(
            self.sessionmaker, why="a worker has no request: one round of activity reminders"
        ) as session:
            return await planning.plan_reminders(session, self.settings, batch=self.batch)

    # --- delivery --------------------------------------------------------------------------

    async def claim(self) -> list[tuple[Claimed, str | None]]:
        """Take up to `batch` due deliveries; with each, the member's openid (None when the
        member has unbound WeChat since)."""
        async with separate_transaction(
            self.sessionmaker,
            why="the claim must be committed before WeChat is called, for other workers to see",
        ) as session:
            return await deliveries.claim(
                session, worker=self.name, lease=self.lease, batch=self.batch
            )

    async def _begin_attempt(self, delivery_id: uuid.UUID) -> int | None:
        """Mark the delivery `attempting` and count the attempt; None when the claim is lost."""
        async with separate_transaction(
            self.sessionmaker,
            why="an attempt is recorded before WeChat is called, for a take-over to know",
        ) as session:
            return await deliveries.begin_attempt(
                session, delivery_id, worker=self.name, lease=self.lease
            )

    async def _mark(self, delivery_id: uuid.UUID, outcome: deliveries.Outcome) -> bool:
        """Record an outcome, provided the claim is still ours."""
        async with separate_transaction(
            self.sessionmaker, why="each delivery's outcome is recorded as soon as it is known"
        ) as session:
            return await deliveries.mark(session, delivery_id, worker=self.name, outcome=outcome)

    async def _release(self, delivery_ids: list[uuid.UUID]) -> int:
        async with separate_transaction(
            self.sessionmaker, why="a stopping worker hands its batch back at once"
        ) as session:
            return await deliveries.release(session, delivery_ids, worker=self.name)

    async def deliver(self, stats: PassStats) -> None:
        if self.stopping.is_set():
            return
        claimed = await self.claim()
        stats.claimed += len(claimed)
        for done, (delivery, openid) in enumerate(claimed):
            if self.stopping.is_set():
                rest = [d.id for d, _ in claimed[done:]]
                stats.released += await self._release(rest)
                logger.info(
                    "notifications worker stopping: batch handed back",
                    extra={"worker": self.name, "released": len(rest)},
                )
                return
            await self._deliver_one(delivery, openid, stats)

    async def _deliver_one(self, d: Claimed, openid: str | None, stats: PassStats) -> None:
        settled = sending.settle_without_sending(
            d,
            openid,
            max_attempts=self.settings.wechat_send_max_attempts,
            max_unconfirmed=self.settings.wechat_send_max_unconfirmed,
        )
        if settled is not None:
            if await self._mark(d.id, settled.outcome):
                stats.count(settled.tally)
            else:
                stats.lost += 1
            return
        assert openid is not None  # settle_without_sending answers for a member without one
        attempt = await self._begin_attempt(d.id)
        if attempt is None:
            # The claim expired and another worker has the delivery now: not ours to send.
            stats.lost += 1
            return
        result = await sending.send(
            self.client,
            d,
            openid,
            attempt=attempt,
            max_attempts=self.settings.wechat_send_max_attempts,
            retry_base_seconds=self.retry_base_seconds,
        )
        if result.tally == "sent" and self.after_send is not None:
            self.after_send(d.id)
        stats.count(result.tally)
        if not await self._mark(d.id, result.outcome):
            logger.warning(
                "delivery outcome not recorded: the claim was taken over meanwhile",
                extra={"worker": self.name, "delivery_id": str(d.id), "tally": result.tally},
            )


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
