"""Counting a delivery's attempts where a send may really have happened.

A worker marks a delivery `attempting` (and counts the attempt) in a committed step of its own
right before it calls WeChat.  When its claim expires, only that delivery counts the take-over
(`recoveries`): the rest of a crashed batch is claimed again as if new.  A message is given up
(`unconfirmed_after_recovery`) only after `wechat_send_max_unconfirmed` sends of its own ended
without a recorded outcome, never because someone else's batch crashed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.fake import PATH_SEND
from app.models.organization import Organization
from app.models.wechat import NotificationDelivery
from app.wechat import deliveries as d
from app.wechat.worker import NotificationWorker
from tests.fixtures.orgs import Tree
from tests.wechat.conftest import FakeWechat
from tests.wechat.helpers import bind_member
from tests.wechat.test_worker import Crash, approved_checkin, drain


@pytest.fixture
def org(tree: Tree) -> Organization:
    return tree.r2


def worker(
    app: FastAPI,
    wechat: WechatClient,
    name: str,
    *,
    settings: dict[str, Any] | None = None,
    **kw: Any,
) -> NotificationWorker:
    return NotificationWorker(
        client=wechat,
        sessionmaker=app.state.sessionmaker,
        settings=wechat.settings.model_copy(update=settings or {}),
        name=name,
        retry_base_seconds=0.0,
        **kw,
    )


def dies_at_send(number: int) -> Callable[[uuid.UUID], None]:
    """An `after_send` that kills the worker right after its `number`-th message went out."""
    sent: list[uuid.UUID] = []

    def after_send(delivery_id: uuid.UUID) -> None:
        sent.append(delivery_id)
        if len(sent) == number:
            raise Crash()

    return after_send


async def rows(db: AsyncSession) -> list[NotificationDelivery]:
    db.expire_all()
    return list(
        (
            await db.execute(
                select(NotificationDelivery).order_by(
                    NotificationDelivery.next_attempt_at, NotificationDelivery.id
                )
            )
        ).scalars()
    )


async def expire_claims(db: AsyncSession) -> None:
    """Time passes: every claim held runs out."""
    await db.execute(
        update(NotificationDelivery)
        .where(NotificationDelivery.claimed_until.is_not(None))
        .values(claimed_until=clock.now() - timedelta(seconds=1))
    )
    await db.commit()


async def planned(
    app: FastAPI,
    db: AsyncSession,
    fake: FakeWechat,
    wechat: WechatClient,
    org: Organization,
    n: int,
) -> list[str]:
    """`n` members with a message planned each; their openids."""
    openids = []
    for _ in range(n):
        member, openid = await bind_member(db, fake)
        await approved_checkin(db, member, org)
        openids.append(openid)
    assert await worker(app, wechat, "planner").fan_out() == n
    return openids


def copies(fake: FakeWechat, openids: list[str]) -> list[int]:
    sent = [m["touser"] for m in fake.sent()]
    return [sent.count(o) for o in openids]


class TestCrashedBatches:
    async def test_three_crashes_in_a_row_on_one_batch_lose_no_message(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        """Each worker sends one message, then dies while sending the next: the batch is taken
        over three times, yet only the message in flight at each crash goes out twice."""
        openids = await planned(app, db, fake, wechat, org, 6)
        for name in ("first", "second", "third"):
            doomed = worker(app, wechat, name, after_send=dies_at_send(2))
            with pytest.raises(Crash):
                await doomed.run_once()
            await expire_claims(db)
        stats = await drain(worker(app, wechat, "healthy"))
        assert stats.failed == 0 and stats.skipped == 0
        per_member = copies(fake, openids)
        assert min(per_member) == 1 and max(per_member) == 2
        assert per_member.count(2) == 3  # one in flight at each crash
        found = await rows(db)
        assert {r.status for r in found} == {"sent"}
        twice = [r for r in found if r.attempts == 2]
        assert len(twice) == 3 and all(r.recoveries == 1 for r in twice)
        assert all((r.attempts, r.recoveries) == (1, 0) for r in found if r not in twice)

    async def test_an_interrupted_batch_counts_only_the_delivery_in_flight(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        await planned(app, db, fake, wechat, org, 4)
        with pytest.raises(Crash):
            await worker(app, wechat, "doomed", after_send=dies_at_send(1)).run_once()
        await expire_claims(db)
        # A take-over without a send: the next worker claims the batch, then dies before its
        # first send (a claim-only crash): nothing may count for that.
        taken = await worker(app, wechat, "claims-only").claim()
        assert len(taken) == 4
        await expire_claims(db)
        found = await rows(db)
        assert sorted((r.status, r.attempts, r.recoveries) for r in found) == [
            ("sending", 0, 0),
            ("sending", 0, 0),
            ("sending", 0, 0),
            ("sending", 1, 1),  # the one in flight at the first crash, counted once
        ]
        stats = await drain(worker(app, wechat, "healthy"))
        assert (stats.sent, stats.failed) == (4, 0)
        assert len(fake.sent()) == 5


class TestGivingUp:
    async def test_given_up_only_after_its_own_unconfirmed_sends(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        """With three unconfirmed sends allowed, a message crashed on three times went out three
        times before it is given up; a message of the same batch never sent still goes out."""
        [first, second] = await planned(app, db, fake, wechat, org, 2)
        allow_three = {"wechat_send_max_unconfirmed": 3, "wechat_send_max_attempts": 5}
        for name in ("a", "b", "c"):
            doomed = worker(app, wechat, name, settings=allow_three, after_send=dies_at_send(1))
            with pytest.raises(Crash):
                await doomed.run_once()
            await expire_claims(db)
        stats = await drain(worker(app, wechat, "healthy", settings=allow_three))
        assert (stats.failed, stats.sent) == (1, 1)
        assert sorted(copies(fake, [first, second])) == [1, 3]
        [given_up, sent] = await rows(db)
        assert (given_up.status, given_up.last_error) == ("failed", "unconfirmed_after_recovery")
        assert (given_up.attempts, given_up.recoveries) == (3, 3)
        assert (sent.status, sent.attempts, sent.recoveries) == ("sent", 1, 0)

    async def test_an_unconfirmed_last_attempt_is_not_repeated_past_the_maximum(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        """Two transient failures, then the third and last attempt is interrupted: it may have
        gone out, and there is no attempt left; failed without a fourth send."""
        await planned(app, db, fake, wechat, org, 1)
        fake.state.fail_next(PATH_SEND, errcode=-1, times=2)
        retrying = worker(app, wechat, "retrying")
        assert (await retrying.run_once()).retried == 1
        assert (await retrying.run_once()).retried == 1
        with pytest.raises(Crash):
            await worker(app, wechat, "doomed", after_send=dies_at_send(1)).run_once()
        await expire_claims(db)
        stats = await drain(worker(app, wechat, "healthy"))
        assert stats.failed == 1 and stats.sent == 0
        assert fake.calls(PATH_SEND) == 3  # wechat_send_max_attempts = 3
        [row] = await rows(db)
        assert (row.status, row.last_error) == ("failed", "unconfirmed_after_recovery")
        assert (row.attempts, row.recoveries) == (3, 1)


class TestClaims:
    async def test_a_worker_that_lost_its_claim_does_not_send(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        await planned(app, db, fake, wechat, org, 1)
        sessionmaker = app.state.sessionmaker
        lease = timedelta(seconds=60)
        async with sessionmaker.begin() as session:
            [(claimed, _)] = await d.claim(session, worker="slow", lease=lease, batch=5)
        await expire_claims(db)
        async with sessionmaker.begin() as session:
            [(again, _)] = await d.claim(session, worker="quick", lease=lease, batch=5)
        assert again.id == claimed.id and again.recoveries == 0  # it was not being sent
        async with sessionmaker.begin() as session:
            assert await d.begin_attempt(session, claimed.id, worker="slow", lease=lease) is None
            assert await d.begin_attempt(session, claimed.id, worker="quick", lease=lease) == 1
            # Settling it is the holder's alone, and only once.
            outcome = d.Outcome(d.SENT, None, sent_at=clock.now())
            assert not await d.mark(session, claimed.id, worker="slow", outcome=outcome)
            assert await d.mark(session, claimed.id, worker="quick", outcome=outcome)
            assert not await d.mark(session, claimed.id, worker="quick", outcome=outcome)
        [row] = await rows(db)
        assert (row.status, row.attempts, row.recoveries) == ("sent", 1, 0)

    async def test_the_attempt_renews_the_claim_for_the_send(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        await planned(app, db, fake, wechat, org, 1)
        sessionmaker = app.state.sessionmaker
        async with sessionmaker.begin() as session:
            [(claimed, _)] = await d.claim(session, worker="w", lease=timedelta(seconds=1), batch=5)
        await expire_claims(db)
        async with sessionmaker.begin() as session:
            # Expired but not taken over: still ours, and the attempt holds it a lease longer.
            assert (
                await d.begin_attempt(session, claimed.id, worker="w", lease=timedelta(minutes=5))
                == 1
            )
        [row] = await rows(db)
        assert row.status == d.ATTEMPTING
        assert row.claimed_until is not None
        assert row.claimed_until > clock.now() + timedelta(minutes=4)
        async with sessionmaker.begin() as session:
            assert await d.claim(session, worker="other", lease=timedelta(seconds=1), batch=5) == []


class TestStopping:
    async def test_a_stopping_worker_hands_its_batch_back_uncounted(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        await planned(app, db, fake, wechat, org, 5)
        stopping = worker(app, wechat, "stopping")
        stopping.after_send = lambda _: stopping.stopping.set()  # SIGTERM during the first send
        stats = await stopping.run_once()
        assert (stats.claimed, stats.sent, stats.released) == (5, 1, 4)
        found = await rows(db)
        assert sorted((r.status, r.attempts, r.recoveries, r.claimed_by) for r in found) == [
            ("pending", 0, 0, None),
            ("pending", 0, 0, None),
            ("pending", 0, 0, None),
            ("pending", 0, 0, None),
            ("sent", 1, 0, None),
        ]
        # Another worker takes them at once, without waiting for a lease to run out.
        stats = await worker(app, wechat, "next").run_once()
        assert stats.sent == 4
        assert len(fake.sent()) == 5
