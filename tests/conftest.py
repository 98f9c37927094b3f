"""Test harness: a throwaway database per run (SQLite file or PostgreSQL on 127.0.0.1:5432,
chosen by QUYU_TEST_DB), built with `alembic upgrade head`; every table emptied after each test;
the app driven in-process through httpx's ASGI transport."""

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
_RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"

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
    }
)

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from sqlalchemy import event, text, update  # noqa: E402
from sqlalchemy.ext.asyncio import (  # noqa: E402
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

pytest_plugins = ["tests.fixtures.factories"]


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


@pytest.fixture(autouse=True)
async def _clean_tables(app: FastAPI) -> AsyncIterator[None]:
    yield
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with app.state.engine.begin() as conn:
        if TEST_DB == "postgres":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            # SQLite enforces ON DELETE RESTRICT row by row, even inside one statement, so
            # the self-referencing organization tree is unlinked before the rows go.
            await conn.execute(update(Organization).values(parent_id=None))
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608


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
async def db(_test_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking data; factories commit through it."""
    async with AsyncSession(_test_engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Requests go to /api/v1: `client.get("/me")`.  Use absolute URLs for /healthz etc."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as c:
        yield c


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
            if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
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
