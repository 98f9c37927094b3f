"""The access token shared through the database: cached, refreshed ahead of expiry, one
refresh at a time across processes (each store below stands for a process)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core import clock
from app.core.crypto import decrypt
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.fake import PATH_TOKEN
from app.integrations.wechat.token_store import CONTEXT
from app.models.wechat import WechatAccessToken
from tests.wechat.conftest import FakeWechat


def process(app: FastAPI, client: WechatClient) -> WechatClient:
    """Another process: same database and settings, its own store and memory."""
    return WechatClient(client.http, client.settings, app.state.sessionmaker)


class TestAccessTokenStore:
    async def test_cached_in_the_database_encrypted_and_reused(
        self, app: FastAPI, db: AsyncSession, fake: FakeWechat, wechat: WechatClient
    ) -> None:
        token = await wechat.tokens.get()
        assert await wechat.tokens.get() == token
        assert await process(app, wechat).tokens.get() == token  # read from the database
        assert fake.calls(PATH_TOKEN) == 1
        row = (await db.execute(select(WechatAccessToken))).scalar_one()
        assert token.encode() not in (row.token_enc or b"")
        assert decrypt(row.token_enc or b"", context=CONTEXT) == token
        assert row.expires_at is not None
        assert row.expires_at > clock.now() + timedelta(seconds=7000)
        assert row.lease_owner is None and row.lease_until is None

    async def test_refreshed_before_it_runs_out(
        self, app: FastAPI, db: AsyncSession, fake: FakeWechat, wechat: WechatClient
    ) -> None:
        old = await wechat.tokens.get()
        # Four minutes left (inside the five-minute margin), last refreshed long ago.
        await db.execute(
            update(WechatAccessToken).values(
                expires_at=clock.now() + timedelta(minutes=4),
                updated_at=clock.now() - timedelta(hours=2),
            )
        )
        await db.commit()
        with fake.state.lock:  # WeChat's own switch-over: the old token is near its end too
            fake.state.tokens[old] -= 7000
        new = await process(app, wechat).tokens.get()
        assert new != old
        assert fake.calls(PATH_TOKEN) == 2

    @pytest.mark.committing
    async def test_many_processes_refresh_once(
        self, app: FastAPI, fake: FakeWechat, wechat: WechatClient
    ) -> None:
        stores = [process(app, wechat) for _ in range(6)]
        tokens = await asyncio.gather(*(s.tokens.get() for s in stores))
        assert len(set(tokens)) == 1
        assert fake.calls(PATH_TOKEN) == 1

    async def test_a_lease_left_by_a_dead_process_expires(
        self, app: FastAPI, db: AsyncSession, fake: FakeWechat, wechat: WechatClient
    ) -> None:
        await wechat.tokens.get()
        await db.execute(
            update(WechatAccessToken).values(
                token_enc=None,
                expires_at=None,
                lease_owner="dead",
                lease_until=clock.now() - timedelta(seconds=1),
            )
        )
        await db.commit()
        token = await process(app, wechat).tokens.get()
        assert token
        assert fake.calls(PATH_TOKEN) == 2

    async def test_a_refused_token_is_force_refreshed(
        self, app: FastAPI, fake: FakeWechat, wechat: WechatClient, wx_settings: Settings
    ) -> None:
        old = await wechat.tokens.get()
        new = await wechat.tokens.get(stale=old)
        assert new != old
        with fake.state.lock:
            assert old not in fake.state.tokens  # force_refresh=true invalidated it
        # Another process that still remembers nothing gets the new one from the database.
        assert await process(app, wechat).tokens.get() == new
