"""Test harness: a throwaway database per test process (SQLite file or PostgreSQL on
127.0.0.1:5432, chosen by QUYU_TEST_DB; under pytest-xdist each worker has its own), built with
`alembic upgrade head`; the app driven in-process through httpx's ASGI transport.

Isolation between tests
-----------------------
By default a test runs inside one transaction that is rolled back at its end, so that nothing
needs emptying afterwards.  The `_isolation` fixture takes one connection from the app's engine
and BEGINs on it (on SQLite the app's engine makes that BEGIN IMMEDIATE: the test holds the
write lock throughout).  For the length of the test the app's own sessionmaker
(`app.state.sessionmaker`, the very object that requests, the anonymous idempotency look-up,
the throttle, the WeChat token store and the worker reach) is re-bound to that connection with
`join_transaction_mode="create_savepoint"`, and so is the tests' `db` session: every
`session.begin()` / `commit()` of the app becomes SAVEPOINT / RELEASE SAVEPOINT, every rollback
a ROLLBACK TO SAVEPOINT, and what a request committed is seen by the next request and by `db`
exactly as before, because they all share the one connection.  The app's code is not changed:
only the sessionmaker's arguments are, put back afterwards.  (This relies on a failed request
rolling back before its response is sent, which `app.db.session.session_scope` guarantees: a
late ROLLBACK TO SAVEPOINT would undo the savepoints opened since, the test's next writes.)
`count_queries` leaves out the savepoint statements this adds, so the counts are those of the
app's own SQL.

This is sound while the app's sessions on the test's connection follow one another or nest
(an outer session still open while an inner one commits and closes): savepoints nest the same
way.  It is not sound, and real commits are needed, when:

* several sessions work at once (`asyncio.gather` of requests or workers): they would
  interleave SAVEPOINTs on one connection, and the concurrency being tested (row locks,
  unique constraints racing, SKIP LOCKED) needs separate connections;
* a second engine or process must see the test's data (a second worker's engine, the
  fuzzed app's own engine, `quyu seed`'s engine) or open its own connection (`/readyz`,
  which on SQLite would wait behind the test's write lock).

Such tests carry `@pytest.mark.committing`: they get no outer transaction, the sessionmaker
keeps its engine, `db` commits through its own engine as before, and every table is emptied
after the test (TRUNCATE on PostgreSQL, DELETE on SQLite), which is the clean-up every test
used to have.  They are the concurrency tests (mostly postgres_only), the two-worker tests of
the WeChat worker and the token store's racing processes, the fuzz tests, the demo seed, and
the /readyz probes.  A marked test is slower, never wrong; an unmarked one that needs real
commits is bound to fail (savepoint errors, or data another connection cannot see) rather
than pass by accident.  Emptying only the tables a test wrote to was not needed: the committing
tests are few.  Tests that run a server on a database of their own (tests/identity/
test_multiworker.py) write nothing here and need no marker.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TEST_DB = os.environ.get("QUYU_TEST_DB", "sqlite")
PG_ADMIN_DSN = os.environ.get("QUYU_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
# One database per process: pytest-xdist's workers are processes of their own.
_RUN_ID = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}_{secrets.token_hex(3)}"

if TEST_DB == "postgres":
    DB_NAME = f"quyu_test_{_RUN_ID}"
    DATABASE_URL = (
        PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        + f"/{DB_NAME}"
    )
elif TEST_DB == "sqlite":
    DB_NAME = str(Path(tempfile.gettempdir()) / f"quyu_test_{_RUN_ID}.db")
    DATABASE_URL = f"sqlite+aiosqlite:///{DB_NAME}"
else:
    raise RuntimeError("QUYU_TEST_DB must be sqlite or postgres")

# Settings are read from the environment: set them before the app is imported.
os.environ.update(
    {
        "QUYU_ENV": "test",
        "QUYU_DATABASE_URL": DATABASE_URL,
        "QUYU_JWT_SECRET": secrets.token_urlsafe(48),
        "QUYU_FIELD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "QUYU_BLIND_INDEX_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "QUYU_LOG_LEVEL": "WARNING",
        # The hosts the suite's clients name (http://test, http://t, …); servers it starts
        # as processes are reached at 127.0.0.1.
        "QUYU_ALLOWED_HOSTS": "test,t,kit,localhost,127.0.0.1,testserver",
        "QUYU_PUBLIC_BASE_URL": "http://test",
    }
)

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from sqlalchemy import event, text, update  # noqa: E402
from sqlalchemy.ext.asyncio import (  # noqa: E402
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import get_settings  # noqa: E402
from app.db.base import Base  # noqa: E402
from app.main import create_app  # noqa: E402
from app.models.organization import Organization  # noqa: E402

get_settings.cache_clear()

pytest_plugins = ["tests.fixtures.factories", "tests.fixtures.orgs"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_DB == "postgres":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (QUYU_TEST_DB=postgres)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


async def _create_database() -> None:
    if TEST_DB != "postgres":
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await conn.close()


async def _drop_database() -> None:
    if TEST_DB != "postgres":
        for suffix in ("", "-wal", "-shm"):
            Path(DB_NAME + suffix).unlink(missing_ok=True)
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await conn.close()


def alembic_config(url: str = DATABASE_URL) -> Any:
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "alembic"))
    cfg.attributes["database_url"] = url
    return cfg


def _upgrade() -> None:
    from alembic import command

    command.upgrade(alembic_config(), "head")


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[FastAPI]:
    await _create_database()
    # Alembic's env runs its own event loop: give it a thread.
    await asyncio.to_thread(_upgrade)
    application = create_app(configure_logs=False)
    async with application.router.lifespan_context(application):
        yield application
    await _drop_database()


@pytest.fixture(scope="session")
def sessionmaker(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    return factory


async def _empty_tables(engine: AsyncEngine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if TEST_DB == "postgres":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            # SQLite enforces ON DELETE RESTRICT row by row, even inside one statement, so
            # the self-referencing organization tree is unlinked before the rows go.
            await conn.execute(update(Organization).values(parent_id=None))
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608


@pytest.fixture(autouse=True)
async def _isolation(
    request: pytest.FixtureRequest, app: FastAPI
) -> AsyncIterator[AsyncConnection | None]:
    """The test's connection, in a transaction rolled back at the end (see the module's
    docstring); None for a `committing` test, whose writes are emptied afterwards."""
    engine: AsyncEngine = app.state.engine
    if request.node.get_closest_marker("committing") is not None:
        yield None
        await _empty_tables(engine)
        return
    factory: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    configured = dict(factory.kw)
    async with engine.connect() as conn:
        outer = await conn.begin()
        factory.configure(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield conn
        finally:
            factory.kw.clear()
            factory.configure(**configured)
            await outer.rollback()


@pytest.fixture(scope="session")
async def _test_engine(app: FastAPI) -> AsyncIterator[AsyncEngine]:
    """The tests' own engine.  On SQLite it opens deferred transactions, so that a test
    reading between requests does not hold the write lock the app's sessions take."""
    if TEST_DB == "postgres":
        yield app.state.engine
        return
    engine = create_async_engine(DATABASE_URL, connect_args={"timeout": 30})
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(
    _isolation: AsyncConnection | None, _test_engine: AsyncEngine
) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking data; factories commit through it (to a
    savepoint of the test's transaction, or for real in a `committing` test)."""
    if _isolation is None:
        session = AsyncSession(_test_engine, expire_on_commit=False)
    else:
        session = AsyncSession(
            _isolation, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
    async with session:
        yield session


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Requests go to /api/v1: `client.get("/me")`.  Use absolute URLs for /healthz etc."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as c:
        yield c


# Transaction control, not the app's queries: SAVEPOINT / RELEASE / ROLLBACK TO are what the
# test's outer transaction turns the app's BEGIN / COMMIT / ROLLBACK into (which the drivers
# do not send as statements), and SQLite's BEGIN IMMEDIATE is sent as one.
_NOT_COUNTED = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK TO SAVEPOINT")


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []


@pytest.fixture
def count_queries(app: FastAPI) -> Any:
    """`with count_queries() as q: ...; q.count` counts SQL statements sent by the app."""

    @contextmanager
    def counter() -> Iterator[QueryCounter]:
        result = QueryCounter()

        def on_execute(*args: Any) -> None:
            statement = args[2]
            if not statement.lstrip().upper().startswith(_NOT_COUNTED):
                result.count += 1
                result.statements.append(statement)

        engine = app.state.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_execute)
        try:
            yield result
        finally:
            event.remove(engine, "before_cursor_execute", on_execute)

    return counter


def new_id() -> uuid.UUID:
    return uuid.uuid4()
