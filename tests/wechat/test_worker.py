"""The notifications worker against the WeChat stand-in (a real HTTP server): fan-out from
the outbox, reminders, claims shared by racing workers, crashes between send and mark,
43101, transient errors and token refresh."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings, WechatTemplate
from app.core import clock
from app.core.outbox import record_event
from app.db.session import create_engine, create_sessionmaker
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.fake import PATH_SEND, PATH_TOKEN
from app.models.activity import Activity, Signup
from app.models.checkin import Checkin
from app.models.organization import Organization
from app.models.user import User
from app.models.wechat import NotificationDelivery
from app.wechat import notifications as n
from app.wechat.worker import NotificationWorker, PassStats
from tests.fixtures.factories import login, make_officer, make_org, make_user
from tests.fixtures.orgs import Tree
from tests.wechat.conftest import FakeWechat
from tests.wechat.helpers import bind_member, count


class Crash(Exception):
    """Stands for the process dying between sending a message and marking it sent."""


def make_worker(
    app: FastAPI,
    client: WechatClient,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    **kwargs: Any,
) -> NotificationWorker:
    kwargs.setdefault("retry_base_seconds", 0.0)
    return NotificationWorker(
        client=client,
        sessionmaker=sessionmaker or app.state.sessionmaker,
        settings=client.settings,
        **kwargs,
    )


async def drain(worker: NotificationWorker) -> PassStats:
    total = PassStats()
    while True:
        stats = await worker.run_once()
        for name in total.__dataclass_fields__:
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        if not stats.busy:
            return total


async def deliveries(db: AsyncSession) -> list[NotificationDelivery]:
    db.expire_all()
    return list((await db.execute(select(NotificationDelivery))).scalars())


async def approved_checkin(
    db: AsyncSession,
    user: User,
    org: Organization,
    *,
    status: str = "approved",
    comment: str | None = "欢迎加入",
) -> Checkin:
    """A decided check-in and the event the check-ins module records for it."""
    checkin = Checkin(
        user_id=user.id,
        org_id=org.id,
        status=status,
        decided_at=clock.now(),
        decision_comment=comment,
    )
    db.add(checkin)
    await db.flush()
    record_event(
        db,
        f"checkin.{status}",
        {
            "checkin_id": str(checkin.id),
            "org_id": str(org.id),
            "user_id": str(user.id),
            "actor_id": str(user.id),
            "from_state": "pending",
            "to_state": status,
        },
        aggregate_id=str(checkin.id),
    )
    await db.commit()
    return checkin


async def make_activity(
    db: AsyncSession, org: Organization, *, starts_in: timedelta, **fields: Any
) -> Activity:
    starts = clock.now() + starts_in
    values: dict[str, Any] = {
        "org_id": org.id,
        "district_id": org.id,
        "title": "社区环境整治志愿服务",
        "category": "volunteer",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=2),
        "location_name": "月湖公园东门",
        "lat": 29.87,
        "lng": 121.54,
        "radius_m": 300,
        "visibility": "public",
        "post": "community",
        "status": "published",
    }
    values.update(fields)
    activity = Activity(**values)
    db.add(activity)
    await db.commit()
    return activity


@pytest.fixture
def org(tree: Tree) -> Organization:
    """A regional organization of the suite's tree (月湖社区区域党总支)."""
    return tree.r2


@pytest.fixture
async def second_engine(app: FastAPI, wx_settings: Settings) -> AsyncIterator[Any]:
    """Another "process": its own engine, HTTP client and access-token store."""
    engine = create_engine(wx_settings)
    http = WechatClient.new_http_client(wx_settings)
    sessionmaker = create_sessionmaker(engine)
    yield sessionmaker, WechatClient(http, wx_settings, sessionmaker)
    await http.aclose()
    await engine.dispose()


class TestFanOut:
    async def test_an_approved_checkin_reaches_the_member_once(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, openid = await bind_member(db, fake)
        officer = await make_officer(db, org)
        checkin = Checkin(user_id=member.id, org_id=org.id, status="pending")
        db.add(checkin)
        await db.commit()
        r = await client.post(
            f"/checkins/{checkin.id}/approve",
            json={"comment": "欢迎"},
            headers=await login(db, officer),
        )
        assert r.status_code == 200, r.text
        worker = make_worker(app, wechat)
        stats = await drain(worker)
        assert stats.sent == 1
        [message] = fake.sent()
        assert message["touser"] == openid
        assert message["template_id"] == "tpl-checkin"
        assert message["page"] == "pages/checkins/index"
        assert message["data"]["thing1"]["value"] == "月湖社区区域党总支"
        assert message["data"]["phrase2"]["value"] == "已通过"
        assert message["data"]["thing3"]["value"] == "欢迎"
        assert "年" in message["data"]["time4"]["value"]
        # Another pass, another worker: nothing more.
        await drain(make_worker(app, wechat))
        assert len(fake.sent()) == 1
        [row] = await deliveries(db)
        assert row.status == "sent" and row.sent_at is not None and row.attempts == 1

    async def test_values_are_cut_to_wechat_limits(
        self, app: FastAPI, db: AsyncSession, fake: FakeWechat, wechat: WechatClient
    ) -> None:
        long_org = await make_org(db, name="宁波市海曙区南门街道商务楼宇联合党委第一党支部")
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, long_org, status="rejected", comment="材料" * 30)
        stats = await drain(make_worker(app, wechat))
        assert stats.sent == 1, stats
        data = fake.sent()[0]["data"]
        assert len(data["thing1"]["value"]) == 20
        assert data["thing1"]["value"].endswith("…")
        assert data["phrase2"]["value"] == "未通过"
        assert len(data["thing3"]["value"]) == 20

    async def test_contribution_promotion_and_cancellation_events(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, openid = await bind_member(db, fake)
        activity = await make_activity(db, org, starts_in=timedelta(days=2))
        base = {"activity_id": str(activity.id), "user_id": str(member.id)}
        record_event(db, "activity.signup.promoted", {**base, "reason": "seat_freed"})
        record_event(db, "activity.signup.cancelled", {**base, "reason": "activity_cancelled"})
        record_event(db, "activity.signup.cancelled", {**base, "reason": "member"})
        record_event(
            db,
            "contribution.returned",
            {"contribution_id": str(uuid.uuid4()), "user_id": str(member.id)},
        )
        record_event(db, "checkin.submitted", {"user_id": str(member.id)})
        await db.commit()
        stats = await drain(make_worker(app, wechat))
        assert stats.sent == 3  # not for the member's own cancellation nor a submission
        by_template = {m["template_id"]: m for m in fake.sent()}
        assert sorted(by_template) == ["tpl-cancelled", "tpl-contribution", "tpl-promoted"]
        promoted = by_template["tpl-promoted"]
        assert promoted["touser"] == openid
        assert promoted["page"] == f"pages/activities/detail?id={activity.id}"
        assert promoted["data"]["thing1"]["value"] == "社区环境整治志愿服务"
        assert promoted["data"]["phrase4"]["value"] == "候补成功"
        contribution = by_template["tpl-contribution"]["data"]
        assert contribution["phrase2"]["value"] == "已退回"
        assert "年" in contribution["time4"]["value"]

    async def test_members_without_wechat_and_kinds_without_template_get_nothing(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        unbound = await make_user(db)
        await approved_checkin(db, unbound, org)
        bound, _ = await bind_member(db, fake)
        await approved_checkin(db, bound, org)
        settings = wechat.settings.model_copy(
            update={"wechat_templates": {n.CHECKIN_DECISION: WechatTemplate(template_id="")}}
        )
        quiet = NotificationWorker(
            client=wechat, sessionmaker=app.state.sessionmaker, settings=settings
        )
        await drain(quiet)
        assert await count(db, NotificationDelivery) == 0
        assert fake.sent() == []

    async def test_field_mapping_and_page_come_from_settings(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, org)
        template = WechatTemplate(
            template_id="tpl-custom",
            page="pages/me/checkins?org={org_name}",
            fields={"name1": "org_name", "phrase9": "result"},
        )
        settings = wechat.settings.model_copy(
            update={"wechat_templates": {n.CHECKIN_DECISION: template}}
        )
        worker = NotificationWorker(
            client=wechat, sessionmaker=app.state.sessionmaker, settings=settings
        )
        await drain(worker)
        [message] = fake.sent()
        assert message["template_id"] == "tpl-custom"
        assert message["data"] == {
            "name1": {"value": "月湖社区区域党总支"},
            "phrase9": {"value": "已通过"},
        }
        assert message["page"] == "pages/me/checkins?org=月湖社区区域党总支"


class TestReminders:
    async def test_confirmed_members_with_wechat_are_reminded_once(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        soon = await make_activity(db, org, starts_in=timedelta(minutes=60))
        soon_id = soon.id
        later = await make_activity(db, org, starts_in=timedelta(hours=5))
        draft = await make_activity(db, org, starts_in=timedelta(minutes=30), status="draft")
        confirmed, openid = await bind_member(db, fake)
        waitlisted, _ = await bind_member(db, fake)
        cancelled, _ = await bind_member(db, fake)
        unbound = await make_user(db)
        for user, activity, state in [
            (confirmed, soon, "confirmed"),
            (waitlisted, soon, "waitlisted"),
            (cancelled, soon, "cancelled"),
            (unbound, soon, "confirmed"),
            (confirmed, later, "confirmed"),
            (confirmed, draft, "confirmed"),
        ]:
            db.add(Signup(activity_id=activity.id, user_id=user.id, status=state))
        await db.commit()
        stats = await drain(make_worker(app, wechat))
        assert stats.sent == 1
        [message] = fake.sent("tpl-reminder")
        assert message["touser"] == openid
        assert message["data"]["thing3"]["value"] == "月湖公园东门"
        assert message["page"] == f"pages/activities/detail?id={soon_id}"
        await drain(make_worker(app, wechat))
        assert len(fake.sent()) == 1
        [row] = await deliveries(db)
        assert (row.ref, row.kind, row.event_id) == (str(soon_id), n.ACTIVITY_REMINDER, None)


class TestDeliveryFailures:
    async def test_not_subscribed_is_recorded_and_not_retried(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, openid = await bind_member(db, fake)
        fake.state.unsubscribed.add(openid)
        await approved_checkin(db, member, org)
        stats = await drain(make_worker(app, wechat))
        assert stats.unsubscribed == 1
        await drain(make_worker(app, wechat))
        assert fake.calls(PATH_SEND) == 1
        [row] = await deliveries(db)
        assert row.status == "unsubscribed"
        assert row.last_error == "errcode 43101"

    @pytest.mark.parametrize(
        "failure",
        [{"errcode": -1}, {"http_status": 502}, {"errcode": 45011}],
    )
    async def test_transient_errors_are_retried_with_backoff(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
        failure: dict[str, int],
    ) -> None:
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, org)
        fake.state.fail_next(PATH_SEND, **failure)
        worker = make_worker(app, wechat, retry_base_seconds=600.0)
        first = await worker.run_once()
        assert first.retried == 1 and first.sent == 0
        [row] = await deliveries(db)
        assert row.status == "pending"
        assert row.next_attempt_at > clock.now() + timedelta(seconds=500)  # backed off
        assert (await worker.run_once()).claimed == 0  # not due yet
        await db.execute(update(NotificationDelivery).values(next_attempt_at=clock.now()))
        await db.commit()
        assert (await worker.run_once()).sent == 1
        assert len(fake.sent()) == 1
        [row] = await deliveries(db)
        assert row.status == "sent" and row.attempts == 2

    async def test_retries_are_bounded(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, org)
        fake.state.fail_next(PATH_SEND, errcode=-1, times=10)
        stats = await drain(make_worker(app, wechat))
        assert stats.retried == 2 and stats.failed == 1  # wechat_send_max_attempts = 3
        assert fake.calls(PATH_SEND) == 3
        [row] = await deliveries(db)
        assert row.status == "failed" and row.last_error == "errcode -1"

    async def test_a_refused_access_token_is_refreshed_and_the_message_sent(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        first, _ = await bind_member(db, fake)
        second, _ = await bind_member(db, fake)
        await approved_checkin(db, first, org)
        await drain(make_worker(app, wechat))
        fake.state.invalidate_tokens()
        await approved_checkin(db, second, org)
        stats = await drain(make_worker(app, wechat))
        assert stats.sent == 1
        assert len(fake.sent()) == 2
        assert fake.calls(PATH_TOKEN) == 2

    async def test_a_member_who_unbound_meanwhile_is_skipped(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, org)
        worker = make_worker(app, wechat)
        assert await worker.fan_out() == 1
        r = await client.delete("/me/wechat", headers=await login(db, member))
        assert r.status_code == 204
        stats = await drain(worker)
        assert stats.skipped == 1
        assert fake.sent() == []


class TestConcurrencyAndCrashes:
    @pytest.mark.committing
    async def test_two_workers_racing_send_each_message_once(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
        second_engine: Any,
    ) -> None:
        members = [await bind_member(db, fake) for _ in range(12)]
        for member, _ in members:
            await approved_checkin(db, member, org)
        other_sessionmaker, other_client = second_engine
        a = make_worker(app, wechat, name="worker-a", batch=3)
        b = make_worker(
            app, other_client, sessionmaker=other_sessionmaker, name="worker-b", batch=3
        )
        stats = await asyncio.gather(drain(a), drain(b), drain(a), drain(b))
        assert sum(s.sent for s in stats) == 12
        sent = fake.sent()
        assert len(sent) == 12
        assert sorted(m["touser"] for m in sent) == sorted(openid for _, openid in members)
        rows = await deliveries(db)
        assert len(rows) == 12
        assert {r.status for r in rows} == {"sent"}
        assert all(r.attempts == 1 and r.recoveries == 0 for r in rows)
        # One access-token refresh for both "processes".
        assert fake.calls(PATH_TOKEN) == 1

    @pytest.mark.parametrize("how", ["exception", "cancelled"])
    async def test_a_worker_killed_between_send_and_mark(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
        how: str,
    ) -> None:
        members = [await bind_member(db, fake) for _ in range(3)]
        for member, _ in members:
            await approved_checkin(db, member, org)
        crashed_on: list[uuid.UUID] = []

        def die(delivery_id: uuid.UUID) -> None:
            crashed_on.append(delivery_id)
            raise Crash() if how == "exception" else asyncio.CancelledError()

        doomed = make_worker(app, wechat, name="doomed", after_send=die)
        task = asyncio.create_task(doomed.run_once())
        with pytest.raises(Crash if how == "exception" else asyncio.CancelledError):
            await task
        assert len(fake.sent()) == 1  # sent, never marked
        rows = await deliveries(db)
        # The one being sent says so; the other two of the batch were only claimed.
        assert sorted((r.status, r.attempts) for r in rows) == [
            ("attempting", 1),
            ("sending", 0),
            ("sending", 0),
        ]

        survivor = make_worker(app, wechat, name="survivor")
        assert (await survivor.run_once()).claimed == 0  # claims still held
        # Time passes: the dead worker's claims expire.
        await db.execute(
            update(NotificationDelivery).values(claimed_until=clock.now() - timedelta(seconds=1))
        )
        await db.commit()
        stats = await drain(survivor)
        assert stats.sent == 3
        sent = fake.sent()
        assert len(sent) == 4  # the crashed one once more, the other two once
        per_user = {openid: sum(m["touser"] == openid for m in sent) for _, openid in members}
        assert sorted(per_user.values()) == [1, 1, 2]
        rows = await deliveries(db)
        assert {r.status for r in rows} == {"sent"}
        # Only the delivery whose send was interrupted counts its take-over and two attempts.
        by_id = {r.id: r for r in rows}
        assert (by_id[crashed_on[0]].recoveries, by_id[crashed_on[0]].attempts) == (1, 2)
        others = [r for r in rows if r.id != crashed_on[0]]
        assert [(r.recoveries, r.attempts) for r in others] == [(0, 1), (0, 1)]
        await drain(make_worker(app, wechat))
        assert len(fake.sent()) == 4

    async def test_a_message_is_never_sent_a_third_time(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
    ) -> None:
        member, _ = await bind_member(db, fake)
        await approved_checkin(db, member, org)

        def die(_: uuid.UUID) -> None:
            raise Crash()

        async def expire() -> None:
            await db.execute(
                update(NotificationDelivery).values(
                    claimed_until=clock.now() - timedelta(seconds=1)
                )
            )
            await db.commit()

        for name in ("first", "second"):
            with pytest.raises(Crash):
                await make_worker(app, wechat, name=name, after_send=die).run_once()
            await expire()
        stats = await drain(make_worker(app, wechat, name="third"))
        assert stats.failed == 1 and stats.sent == 0
        assert len(fake.sent()) == 2
        [row] = await deliveries(db)
        assert row.status == "failed" and row.last_error == "unconfirmed_after_recovery"
        assert (row.attempts, row.recoveries) == (2, 2)

    @pytest.mark.committing
    async def test_fan_out_by_two_workers_creates_each_delivery_once(
        self,
        app: FastAPI,
        db: AsyncSession,
        fake: FakeWechat,
        wechat: WechatClient,
        org: Organization,
        second_engine: Any,
    ) -> None:
        for _ in range(5):
            member, _ = await bind_member(db, fake)
            await approved_checkin(db, member, org)
        other_sessionmaker, other_client = second_engine
        a = make_worker(app, wechat, name="a")
        b = make_worker(app, other_client, sessionmaker=other_sessionmaker, name="b")
        created = await asyncio.gather(a.fan_out(), b.fan_out(), a.fan_out())
        assert sum(created) == 5
        assert await count(db, NotificationDelivery) == 5
