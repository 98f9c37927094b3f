"""Refresh-token rotation under real concurrency (PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.auth import RefreshToken, UserSession
from tests.fixtures.factories import make_user
from tests.identity.helpers import assert_oauth_error, password_login, refresh

CONCURRENT = 10


@pytest.mark.postgres_only
@pytest.mark.committing
class TestAuthTokenRefreshConcurrency:
    async def test_one_token_many_exchanges_exactly_one_wins(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        tokens = (await password_login(client, user.phone)).json()

        answers = await asyncio.gather(
            *(refresh(client, tokens["refresh_token"]) for _ in range(CONCURRENT))
        )

        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] + [401] * (CONCURRENT - 1), [r.text for r in answers]
        for r in answers:
            if r.status_code == 401:
                assert_oauth_error(r, 401, "invalid_grant")
        async with sessionmaker() as s:
            stored = (await s.execute(select(RefreshToken))).scalars().all()
            session = (await s.execute(select(UserSession))).scalar_one()
        # One exchange happened: the original token spent, one successor issued.
        assert len(stored) == 2
        assert sum(t.used_at is not None for t in stored) == 1
        # The losers presented a spent token: the family is revoked, as for any replay.
        assert session.revoked_reason == "refresh_reuse"

    async def test_many_sessions_refresh_side_by_side(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        user = await make_user(db)
        signed = [(await password_login(client, user.phone)).json() for _ in range(CONCURRENT)]
        answers = await asyncio.gather(*(refresh(client, t["refresh_token"]) for t in signed))
        assert [r.status_code for r in answers] == [200] * CONCURRENT
        async with sessionmaker() as s:
            live = (
                await s.execute(select(UserSession).where(UserSession.revoked_at.is_(None)))
            ).scalars()
            assert len(list(live)) == CONCURRENT
