"""Which database errors mean "the database is away" rather than "the query is wrong".

A connection refused, reset or shut down by the server (restart, failover, an administrator
terminating backends) is the database being unavailable: the request may be retried shortly,
so it is answered 503 `service_unavailable` with `Retry-After` and logged as one warning line
(app/core/errors.py, app/core/middleware.py).  Anything else (a syntax error, a constraint
violation nobody handled) is a bug and stays a logged 500.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from types import TracebackType

from sqlalchemy.exc import DBAPIError

# SQLSTATEs of a server that is away or going away: class 08 (connection exception) as a
# prefix, and admin / crash shutdown, cannot connect now (starting up, shutting down,
# recovering), too many connections, and "the database system is in recovery" read-only
# failover (25006 is a read-only transaction: a primary that became a standby).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08",)
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "25006"})

# SQLite: another process holds the lock past the busy timeout, or the file cannot be opened.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file")

# Modules whose frames on an OSError's traceback mean it was raised while connecting.
_CONNECT_MODULES = ("sqlalchemy.pool", "sqlalchemy.engine", "asyncpg", "aiosqlite")


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says the database cannot be reached right now."""
    return any(_one_unavailable(e) for e in _chain(exc))


def _one_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_CLASSES) or (
            sqlstate in _UNAVAILABLE_SQLSTATES
        )
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return any(m in message for m in _SQLITE_UNAVAILABLE)
    if isinstance(exc, ConnectionError):
        return True
    if isinstance(exc, OSError):
        # A bare OSError (say, of a full disk in the evidence store) is not the database's;
        # one raised under the pool or the driver while connecting is.
        return _raised_under(exc.__traceback__, _CONNECT_MODULES)
    return False


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an asyncpg error (`sqlstate`) or SQLAlchemy's adapted one (`pgcode`)."""
    for attr in ("sqlstate", "pgcode"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, the DBAPI error a SQLAlchemy error wraps, and their explicit causes.

    Implicit contexts are left out: an error raised while handling another is judged by
    what it is, not by what was being handled."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        for nxt in (orig, current.__cause__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _raised_under(tb: TracebackType | None, modules: tuple[str, ...]) -> bool:
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(name, str) and name.startswith(modules):
            return True
        tb = tb.tb_next
    return False
