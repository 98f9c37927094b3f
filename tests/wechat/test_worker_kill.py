"""`quyu worker` processes killed (SIGKILL) mid-batch, three times in a row, then a healthy one:
every message goes out, at least once, at most twice for the one in flight at each kill, and
none is marked failed unsent.

200 deliveries are due; WeChat (the stand-in, a real HTTP server in this process) answers each
subscribe message late, so that a kill lands while a send is in flight.  Each doomed worker is
killed once WeChat has received a few messages from it; the next one starts after the claims
of the dead one expired, so that it takes the very same batch over.  Counting take-overs per
claimed batch lost messages this way (every delivery of the batch counted a "recovery" at each
take-over, and on the third the rest of the batch was failed without being sent).

These tests run on either database (SQLite as the test's file, shared by the processes); the
counting itself is tested step by step in tests/wechat/test_delivery_attempts.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.crypto import encrypt
from app.models.user import User
from app.models.wechat import NotificationDelivery, WechatAccount
from app.wechat import deliveries as d
from app.wechat import service
from tests.fixtures.factories import next_phone, password_hash
from tests.fixtures.processes import quyu_executable
from tests.wechat.conftest import APP_ID, APP_SECRET, FakeWechat

pytestmark = pytest.mark.committing

MESSAGES = 200
KILLS = 3
LEASE_SECONDS = 3.0
SEND_DELAY_SECONDS = 0.15
# A doomed worker is killed once WeChat has received this many more messages.
SENT_BEFORE_KILL = (4, 7, 5)
START_SECONDS = 60.0
FINISH_SECONDS = 180.0
STOP_SECONDS = 20.0
ROOT = Path(__file__).resolve().parents[2]


async def plan_messages(db: AsyncSession, fake: FakeWechat) -> list[str]:
    """`MESSAGES` members bound to WeChat, one delivery due for each, in a fixed order of
    falling due; their openids."""
    users = [
        User(phone=next_phone(), name="张三", password_hash=password_hash())
        for _ in range(MESSAGES)
    ]
    db.add_all(users)
    await db.flush()
    openids: list[str] = []
    first_due = clock.now() - timedelta(minutes=1)
    for i, user in enumerate(users):
        openid = fake.state.openid_for(f"killed-worker-{i}")
        openids.append(openid)
        db.add(
            WechatAccount(
                user_id=user.id,
                openid_index=service.openid_index(openid),
                openid_enc=encrypt(openid, context=service.OPENID),
                session_key_enc=encrypt("k", context=service.SESSION_KEY),
            )
        )
        db.add(
            NotificationDelivery(
                ref=f"kill-test-{i}",
                user_id=user.id,
                kind="checkin_decision",
                template_id="tpl-checkin",
                page="pages/checkins/index",
                data={"thing1": f"第{i}条", "phrase2": "已通过"},
                status=d.PENDING,
                attempts=0,
                recoveries=0,
                next_attempt_at=first_due + timedelta(milliseconds=i),
            )
        )
    with fake.state.lock:
        fake.state.openids.update(openids)
    await db.commit()
    return openids


def start_worker(
    fake: FakeWechat, log: Path, *, lease_seconds: float = LEASE_SECONDS
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "QUYU_WECHAT_API_BASE": fake.url,
        "QUYU_WECHAT_APP_ID": APP_ID,
        "QUYU_WECHAT_APP_SECRET": APP_SECRET,
        "QUYU_WECHAT_WORKER_LEASE_SECONDS": str(lease_seconds),
        "QUYU_WECHAT_WORKER_POLL_SECONDS": "0.2",
        "QUYU_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603
            [quyu_executable(), "worker"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def statuses(db: AsyncSession) -> Counter[str]:
    db.expire_all()
    rows = await db.execute(
        select(NotificationDelivery.status, func.count()).group_by(NotificationDelivery.status)
    )
    await db.commit()
    return Counter({status: int(n) for status, n in rows.all()})


async def test_killed_workers_lose_no_message(
    db: AsyncSession, fake: FakeWechat, tmp_path: Path
) -> None:
    openids = await plan_messages(db, fake)
    fake.state.send_delay = SEND_DELAY_SECONDS
    log = tmp_path / "workers.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for kill in range(KILLS):
            received = len(fake.sent())
            doomed = start_worker(fake, log)
            processes.append(doomed)
            deadline = time.monotonic() + START_SECONDS
            while len(fake.sent()) < received + SENT_BEFORE_KILL[kill]:
                assert doomed.poll() is None, f"worker {kill} exited:\n{log.read_text()}"
                if time.monotonic() > deadline:
                    found = await statuses(db)
                    pytest.fail(f"worker {kill} sent nothing: {found}\n{log.read_text()}")
                await asyncio.sleep(0.005)
            doomed.send_signal(signal.SIGKILL)  # while its latest message waits for an answer
            assert doomed.wait(timeout=10) == -signal.SIGKILL
            # Its claims expire; the next worker takes the same batch over.
            await asyncio.sleep(LEASE_SECONDS + 0.5)

        # At most the message in flight at the last kill says a send may have happened; the
        # rest of the batch was merely claimed, and nothing was given up.
        found = await statuses(db)
        assert found[d.ATTEMPTING] <= 1 and not found[d.FAILED], found

        fake.state.send_delay = 0.0
        healthy = start_worker(fake, log)
        processes.append(healthy)
        deadline = time.monotonic() + FINISH_SECONDS
        while (await statuses(db))[d.SENT] < MESSAGES:
            found = await statuses(db)
            assert not found[d.FAILED], f"{found}\n{log.read_text()}"
            assert healthy.poll() is None, f"healthy worker exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not done: {found}\n{log.read_text()}"
            await asyncio.sleep(0.2)
        healthy.send_signal(signal.SIGTERM)
        assert healthy.wait(timeout=STOP_SECONDS) == 0, log.read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    assert await statuses(db) == Counter({d.SENT: MESSAGES})
    copies = Counter(m["touser"] for m in fake.sent())
    assert set(copies) == set(openids)  # every message went out
    twice = [openid for openid, n in copies.items() if n > 1]
    assert max(copies.values()) <= 2
    assert len(twice) <= KILLS  # only the one in flight at each kill
    assert len(fake.sent()) == MESSAGES + len(twice)

    # Counted where a send may have happened: a taken-over attempt once, nothing else.
    db.expire_all()
    rows = (await db.execute(select(NotificationDelivery))).scalars().all()
    repeated = [r for r in rows if r.recoveries]
    assert len(twice) <= len(repeated) <= KILLS
    assert all((r.attempts, r.recoveries) == (2, 1) for r in repeated)
    assert all(r.attempts == 1 for r in rows if not r.recoveries)


async def test_a_stopped_worker_hands_its_batch_back_at_once(
    db: AsyncSession, fake: FakeWechat, tmp_path: Path
) -> None:
    """SIGTERM mid-batch: the message being sent is finished and marked, the rest of the batch
    is pending again with nothing counted, and the process exits well within the compose
    file's grace period, without waiting for its lease."""
    openids = await plan_messages(db, fake)
    fake.state.send_delay = 0.5
    log = tmp_path / "worker.log"
    # A lease far longer than the stop may take: the batch is handed back, not left to expire.
    worker = start_worker(fake, log, lease_seconds=600.0)
    try:
        deadline = time.monotonic() + START_SECONDS
        while len(fake.sent()) < 3:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.005)
        worker.send_signal(signal.SIGTERM)  # while the third message waits for its answer
        stopping = time.monotonic()
        assert worker.wait(timeout=STOP_SECONDS) == 0, log.read_text()
        # Half the compose file's grace period (30 s), leaving room for a loaded machine.
        assert time.monotonic() - stopping < 15.0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    sent = len(fake.sent())
    assert await statuses(db) == Counter({d.SENT: sent, d.PENDING: MESSAGES - sent})
    db.expire_all()
    rows = (await db.execute(select(NotificationDelivery))).scalars().all()
    assert all(r.recoveries == 0 and r.claimed_by is None for r in rows)
    assert sorted(r.attempts for r in rows) == [0] * (MESSAGES - sent) + [1] * sent
    # Handed back: another worker sends the rest now, long before the lease would end.
    fake.state.send_delay = 0.0
    successor = start_worker(fake, log, lease_seconds=600.0)
    try:
        deadline = time.monotonic() + FINISH_SECONDS
        while (await statuses(db))[d.SENT] < MESSAGES:
            assert successor.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
    finally:
        successor.send_signal(signal.SIGTERM)
        successor.wait(timeout=STOP_SECONDS)
    assert len(fake.sent()) == MESSAGES
    assert "batch handed back" in log.read_text()
    assert len(set(openids)) == MESSAGES
