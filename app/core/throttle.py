"""Fixed-window rate limits whose counters live in the database,
so that a limit holds across every worker process and machine."""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.crypto import blind_index
from app.core.errors import AppError
from app.db.session import separate_transaction
from app.models.kit import RateLimitBucket


class Throttled(AppError):
    code = "too_many_requests"


async def hit(
    factory: async_sessionmaker[AsyncSession],
    key: str,
    *,
    limit: int,
    window_seconds: int,
    now: float | None = None,
) -> None:
    """Count one attempt under `key`; raise 429 with Retry-After once `limit` is passed.

    One atomic upsert (INSERT … ON CONFLICT DO UPDATE … RETURNING) in its own short
    transaction, so that the count survives the caller's rollback.
    """
    now = now if now is not None else time.time()
    async with separate_transaction(
        factory, why="the count survives the caller's rollback"
    ) as session:
        await hit_in(session, key, limit=limit, window_seconds=window_seconds, now=now)


async def hit_in(
    session: AsyncSession,
    key: str,
    *,
    limit: int,
    window_seconds: int,
    now: float | None = None,
) -> None:
    """`hit` within the caller's transaction: for a count that may be rolled back with the
    request (an attempt refused here, or one that fails, need not count)."""
    now = now if now is not None else time.time()
    window = int(now // window_seconds) * window_seconds
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = insert(RateLimitBucket).values(
        key=key, window_start=window, count=1, expires_at=window + window_seconds
    )
    upsert = values.on_conflict_do_update(
        index_elements=["key", "window_start"],
        set_={"count": RateLimitBucket.count + 1},
    ).returning(RateLimitBucket.count)
    count = (await session.execute(upsert)).scalar_one()
    if count == 1:
        # Cheap housekeeping: the first hit of a window clears expired windows of its key.
        await session.execute(
            delete(RateLimitBucket).where(
                RateLimitBucket.key == key, RateLimitBucket.expires_at <= now
            )
        )
    if count > limit:
        retry_after = max(1, int(window + window_seconds - now))
        raise Throttled(headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


def address_key(action: str, address: str) -> str:
    """The throttle key of `action` from one client address: a keyed hash of the address,
    never the address itself."""
    return f"{action}:addr:" + blind_index(address, context="throttle.address")


async def throttle_address(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    action: str,
    address: str,
    limit: int | None = None,
    window_seconds: int | None = None,
) -> None:
    """Count an anonymous attempt at `action` per client address; 429 past `limit` (default
    `auth_attempts_per_address`) in a window (default `auth_window_seconds`)."""
    await hit(
        factory,
        address_key(action, address),
        limit=settings.auth_attempts_per_address if limit is None else limit,
        window_seconds=settings.auth_window_seconds if window_seconds is None else window_seconds,
    )
