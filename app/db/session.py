"""Engine and session factory; one AsyncSession per request, committed once at the end."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool

from app.config import Settings

logger = logging.getLogger(__name__)


# SQLite: how long a request may wait for its turn at the one connection before it fails.
SQLITE_QUEUE_SECONDS = 120.0


def create_engine(settings: Settings) -> AsyncEngine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if settings.is_sqlite:
        # SQLite lets one connection write at a time, and every transaction here is a writer
        # (BEGIN IMMEDIATE, below).  With several connections the waiting was left to
        # SQLite's busy handler, which polls: under a burst (many sign-ins at once) a waiter
        # could keep losing the race until the busy timeout and answer 500 "database is
        # locked".  One connection per process instead: the pool hands it to one session
        # at a time, in arrival order, and the others wait in its queue.  The busy timeout
        # stays as the safety net for other processes (`serve --workers N`, `quyu worker`).
        kwargs = {
            "connect_args": {"timeout": settings.sqlite_busy_timeout_seconds},
            "poolclass": AsyncAdaptedQueuePool,
            "pool_size": 1,
            "max_overflow": 0,
            "pool_timeout": SQLITE_QUEUE_SECONDS,
        }
    else:
        kwargs["pool_size"] = settings.database_pool_size
        kwargs["max_overflow"] = settings.database_pool_size
    engine = create_async_engine(settings.database_url, **kwargs)
    if settings.is_sqlite:
        _configure_sqlite(engine, busy_timeout_ms=int(settings.sqlite_busy_timeout_seconds * 1000))
    return engine


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so that BEGIN IMMEDIATE can be used for writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers serialise on SQLite; taking the write lock up front avoids
        # SQLITE_BUSY upgrades from a read to a write transaction under concurrency.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session committed when the block ends cleanly and rolled back, there and then, when it
    raises (a context manager, so that the rollback never waits for a generator's finalizer)."""
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


@asynccontextmanager
async def separate_transaction(
    factory: async_sessionmaker[AsyncSession], *, why: str
) -> AsyncIterator[AsyncSession]:
    """A transaction of its own, apart from the request's: committed when the block ends
    cleanly, rolled back when it raises.

    Most work belongs in the request's one session (`app.deps.DbSession`), committed once at
    the end.  The few places that must not share its fate (a throttle counter that must count
    a failed sign-in, a worker's batch, an anonymous idempotency look-up made before the
    endpoint's own throttle) use this helper, and say `why` in a short phrase, which is also
    logged when the transaction fails.

    Open one only while the request's session holds no connection (before its first query or
    after it closed): on SQLite a process has one connection, and a second transaction asked
    for meanwhile would wait for the first.
    """
    async with factory() as session:
        try:
            async with session.begin():
                yield session
        except Exception:
            logger.debug("separate transaction rolled back", extra={"why": why})
            raise
