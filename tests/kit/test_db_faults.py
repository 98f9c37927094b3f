"""`app.db.faults.is_unavailable` over errors the drivers really raise: a database that is
away (refused, terminated, locked, missing) against a query that is wrong."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.faults import is_unavailable
from tests.conftest import DATABASE_URL, PG_ADMIN_DSN


def _closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "faults.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)")
    conn.commit()
    conn.close()
    return path


class TestSqlite:
    def test_locked_database_is_unavailable(self, sqlite_file: Path) -> None:
        holder = sqlite3.connect(sqlite_file, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        engine = create_engine(f"sqlite:///{sqlite_file}", connect_args={"timeout": 0})
        try:

            def write() -> None:
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t (v) VALUES ('x')"))

            with pytest.raises(OperationalError, match="database is locked") as caught:
                write()
            assert is_unavailable(caught.value)
            orig = caught.value.orig
            assert orig is not None
            assert is_unavailable(orig)  # the bare sqlite3 error too
        finally:
            engine.dispose()
            holder.execute("ROLLBACK")
            holder.close()

    def test_file_that_cannot_be_opened_is_unavailable(self, tmp_path: Path) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
        try:
            with pytest.raises(OperationalError, match="unable to open database file") as caught:
                engine.connect()
        finally:
            engine.dispose()
        assert is_unavailable(caught.value)

    def test_wrong_queries_are_not(self, sqlite_file: Path) -> None:
        engine = create_engine(f"sqlite:///{sqlite_file}")
        try:

            def syntax() -> None:
                with engine.connect() as conn:
                    conn.execute(text("SELEC 1"))

            def missing_table() -> None:
                with engine.connect() as conn:
                    conn.execute(text("SELECT * FROM nowhere"))

            def duplicate() -> None:
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t (v) VALUES ('same')"))
                    conn.execute(text("INSERT INTO t (v) VALUES ('same')"))

            # SQLite reports these as OperationalError too: the message tells them apart.
            with pytest.raises(OperationalError) as syntax_error:
                syntax()
            with pytest.raises(OperationalError) as no_table:
                missing_table()
            with pytest.raises(IntegrityError) as integrity:
                duplicate()
        finally:
            engine.dispose()
        assert not is_unavailable(syntax_error.value)
        assert not is_unavailable(no_table.value)
        assert not is_unavailable(integrity.value)


class TestNotDatabase:
    def test_other_errors_are_not(self, tmp_path: Path) -> None:
        assert not is_unavailable(ValueError("nope"))
        assert not is_unavailable(RuntimeError("could not claim"))
        # An OSError of the file system (the evidence store), not of a connection.
        with pytest.raises(FileNotFoundError) as missing:
            (tmp_path / "absent").read_bytes()
        assert not is_unavailable(missing.value)
        assert not is_unavailable(TimeoutError())


class TestRefused:
    async def test_asyncpg_connect_refused(self) -> None:
        port = _closed_port()
        with pytest.raises(OSError, match="Connect call failed") as caught:
            await asyncpg.connect(host="127.0.0.1", port=port, user="x", database="x")
        assert is_unavailable(caught.value)

    async def test_engine_connect_refused(self) -> None:
        port = _closed_port()
        engine = create_async_engine(f"postgresql+asyncpg://x@127.0.0.1:{port}/x")
        try:
            # Whatever the pool and the driver raise here must classify as unavailable.
            with pytest.raises(Exception) as caught:  # noqa: PT011
                await engine.connect()
        finally:
            await engine.dispose()
        assert is_unavailable(caught.value), repr(caught.value)

    def test_asyncpg_server_errors(self) -> None:
        # Raised by the server with these SQLSTATEs; made here as the driver makes them.
        assert is_unavailable(asyncpg.exceptions.AdminShutdownError("terminating connection"))
        assert is_unavailable(asyncpg.exceptions.CannotConnectNowError("starting up"))
        assert is_unavailable(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
        assert not is_unavailable(asyncpg.exceptions.PostgresSyntaxError("syntax"))
        assert not is_unavailable(asyncpg.exceptions.UniqueViolationError("dup"))


@pytest.mark.postgres_only
@pytest.mark.committing
class TestPostgres:
    async def test_terminated_backend_is_unavailable(self) -> None:
        engine = create_async_engine(DATABASE_URL, pool_pre_ping=False)
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                with pytest.raises(DBAPIError) as caught:
                    await conn.execute(text("SELECT 1"))
            assert is_unavailable(caught.value), repr(caught.value)
        finally:
            await admin.close()
            await engine.dispose()

    async def test_wrong_queries_are_not(self) -> None:
        engine = create_async_engine(DATABASE_URL)
        try:
            async with engine.connect() as conn:
                with pytest.raises(DBAPIError) as syntax_error:
                    await conn.execute(text("SELEC 1"))
                await conn.rollback()
                with pytest.raises(DBAPIError) as no_table:
                    await conn.execute(text("SELECT * FROM nowhere_at_all"))
            assert not is_unavailable(syntax_error.value), repr(syntax_error.value)
            assert not is_unavailable(no_table.value), repr(no_table.value)
        finally:
            await engine.dispose()
