"""The mini-program's access token, cached in the database for every process.

The token is stored encrypted with its expiry.  It is refreshed some minutes before it runs
out, by one process at a time: a process refreshes only after winning a lease with one
conditional UPDATE (`... WHERE lease_until IS NULL OR lease_until < now`), which is atomic on
SQLite and PostgreSQL alike.  The others keep using the current token while it is still
valid, or wait for the new one.  Each step is its own short transaction; none is held open
while WeChat is being called.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core import clock
from app.core.crypto import decrypt, encrypt
from app.db.session import separate_transaction
from app.integrations.wechat.errors import WechatUnavailable
from app.models.wechat import WechatAccessToken

CONTEXT = "wechat_access_tokens.token"
# A token refreshed this recently counts as fresh even inside the margin: WeChat returns the
# same token until its own switch-over, and we must not ask on every call meanwhile.
_MIN_REFRESH_INTERVAL = timedelta(seconds=60)
_STILL_USABLE = timedelta(seconds=10)
_LEASE = timedelta(seconds=30)

Fetch = Callable[[bool], Awaitable[tuple[str, int]]]


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: datetime
    updated_at: datetime


class AccessTokenStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        fetch: Fetch,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._fetch = fetch
        self._owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._memory: _Cached | None = None
        self._local_lock = asyncio.Lock()

    @property
    def app_id(self) -> str:
        return self._settings.wechat_app_id or "-"

    def _fresh(self, cached: _Cached | None, now: datetime, stale: str | None) -> bool:
        if cached is None or cached.token == stale:
            return False
        margin = timedelta(seconds=self._settings.wechat_token_refresh_margin_seconds)
        if cached.expires_at - margin > now:
            return True
        return cached.expires_at - _STILL_USABLE > now and (
            now - cached.updated_at < _MIN_REFRESH_INTERVAL
        )

    async def get(self, *, stale: str | None = None) -> str:
        """A valid access token.  `stale`: a token WeChat just refused (40001): never return
        it again, and force WeChat to issue a new one if it is still the cached one."""
        now = clock.now()
        if self._fresh(self._memory, now, stale):
            assert self._memory is not None
            return self._memory.token
        # One coroutine per process goes to the database; the others then find it fresh.
        async with self._local_lock:
            deadline = time.monotonic() + _LEASE.total_seconds() + 5
            while True:
                now = clock.now()
                if self._fresh(self._memory, now, stale):
                    assert self._memory is not None
                    return self._memory.token
                cached, seen = await self._read()
                if self._fresh(cached, now, stale):
                    self._memory = cached
                    assert cached is not None
                    return cached.token
                if await self._take_lease(now, seen):
                    return await self._refresh(force=cached is not None and cached.token == stale)
                # Another process is refreshing: use the current token while it lasts.
                if (
                    cached is not None
                    and cached.token != stale
                    and cached.expires_at - _STILL_USABLE > now
                ):
                    return cached.token
                if time.monotonic() > deadline:
                    raise WechatUnavailable()
                await asyncio.sleep(0.05)

    async def _read(self) -> tuple[_Cached | None, datetime | None]:
        """The cached token (None when missing) and the row's `updated_at` as seen."""
        async with separate_transaction(
            self._sessionmaker,
            why="the token row is shared by every process, apart from any caller's transaction",
        ) as session:
            row = (
                await session.execute(
                    select(
                        WechatAccessToken.token_enc,
                        WechatAccessToken.expires_at,
                        WechatAccessToken.updated_at,
                    ).where(WechatAccessToken.app_id == self.app_id)
                )
            ).one_or_none()
            if row is None:
                dialect = session.get_bind().dialect.name
                insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
                await session.execute(
                    insert(WechatAccessToken)
                    .values(app_id=self.app_id, updated_at=clock.now())
                    .on_conflict_do_nothing(index_elements=["app_id"])
                )
                return None, None
        if row.token_enc is None or row.expires_at is None:
            return None, row.updated_at
        cached = _Cached(
            token=decrypt(row.token_enc, context=CONTEXT),
            expires_at=row.expires_at,
            updated_at=row.updated_at,
        )
        return cached, row.updated_at

    async def _take_lease(self, now: datetime, seen: datetime | None) -> bool:
        """Win the right to refresh: nobody holds a live lease, and the row is still as we
        read it (so a token stored meanwhile by another process is not refreshed again)."""
        if seen is None:
            return False  # the row was only just created: read it again first
        async with separate_transaction(
            self._sessionmaker,
            why="the refresh lease must commit before WeChat is called",
        ) as session:
            won = (
                await session.execute(
                    update(WechatAccessToken)
                    .where(
                        WechatAccessToken.app_id == self.app_id,
                        WechatAccessToken.updated_at == seen,
                        or_(
                            WechatAccessToken.lease_until.is_(None),
                            WechatAccessToken.lease_until < now,
                        ),
                    )
                    .values(lease_owner=self._owner, lease_until=now + _LEASE)
                    .returning(WechatAccessToken.app_id)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one_or_none()
        return won is not None

    async def _release(self, values: dict[str, object]) -> None:
        async with separate_transaction(
            self._sessionmaker,
            why="the new token and the freed lease are for every process to see at once",
        ) as session:
            await session.execute(
                update(WechatAccessToken)
                .where(
                    WechatAccessToken.app_id == self.app_id,
                    WechatAccessToken.lease_owner == self._owner,
                )
                .values(lease_owner=None, lease_until=None, **values)
                .execution_options(synchronize_session=False)
            )

    async def _refresh(self, *, force: bool) -> str:
        try:
            token, expires_in = await self._fetch(force)
        except BaseException:
            await asyncio.shield(self._release({}))
            raise
        now = clock.now()
        cached = _Cached(
            token=token, expires_at=now + timedelta(seconds=expires_in), updated_at=now
        )
        await self._release(
            {
                "token_enc": encrypt(token, context=CONTEXT),
                "expires_at": cached.expires_at,
                "updated_at": now,
            }
        )
        self._memory = cached
        return token
