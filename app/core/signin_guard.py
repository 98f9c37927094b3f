"""Password sign-in throttling that counts failures, not sign-ins.

Three counters hold every password attempt: the phone with the caller's address (the pair),
the phone alone (a higher allowance: guesses spread over many addresses), and the address
alone (a high allowance: a carrier NAT puts many members behind one address).  Each counter
has a free allowance of failures; past it every further failure locks the counter for twice
as long as the one before (`login_lock_base_seconds`, doubled, up to `login_lock_max_seconds`)
and the attempts made meanwhile are refused (429 with Retry-After) without the password being
looked at.  Failures leak away: a counter forgets its allowance's worth in
`login_failure_decay_seconds`.

A successful sign-in is not counted: it clears the counters of its pair and its phone (and
takes its own attempt off the address).  An address that signed in to a phone successfully
within `login_known_address_days` is not held by that phone's lock, only by the lock of its
own pair: a stranger failing against someone's phone from elsewhere cannot keep its owner
out.  Keys hold keyed hashes, never a phone number or an address.

An attempt is counted as a failure when it is admitted, in one short transaction of its own
that locks the counter rows (row locks on PostgreSQL, the write lock on SQLite), and taken
back when it turns out a success: of many concurrent guesses only the allowance gets through.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.crypto import blind_index
from app.core.throttle import Throttled
from app.db.session import separate_transaction
from app.models.kit import SignInFailure

DAY = 86400
_HOUSEKEEPING_BATCH = 200


@dataclass(frozen=True)
class Counter:
    key: str
    allowance: int


@dataclass(frozen=True)
class Attempt:
    """An admitted attempt, counted as a failure until `succeeded` says otherwise."""

    pair: Counter | None
    phone: Counter | None
    address: Counter


def counters(settings: Settings, *, phone: str | None, address: str) -> Attempt:
    address_key = "addr:" + blind_index(address, context="throttle.address")
    if phone is None:
        return Attempt(
            pair=None,
            phone=None,
            address=Counter(address_key, settings.login_failures_per_address),
        )
    return Attempt(
        pair=Counter(
            "pair:" + blind_index(f"{phone}|{address}", context="throttle.pair"),
            settings.login_failures_per_pair,
        ),
        phone=Counter(
            "phone:" + blind_index(phone, context="throttle.phone"),
            settings.login_failures_per_phone,
        ),
        address=Counter(address_key, settings.login_failures_per_address),
    )


def lock_seconds(settings: Settings, failures: int, allowance: int) -> float:
    """How long a counter is locked after its `failures`-th failure (0 within the allowance)."""
    if failures < allowance:
        return 0.0
    exponent = min(failures - allowance, 40)
    return float(
        min(settings.login_lock_max_seconds, settings.login_lock_base_seconds * 2**exponent)
    )


def remembered(settings: Settings, row: SignInFailure, allowance: int, now: float) -> int:
    """The failures a counter still remembers: one is forgotten every decay/allowance seconds
    since the last one."""
    if not row.failures or row.last_failure_at is None:
        return 0
    leak = settings.login_failure_decay_seconds / allowance
    forgotten = int(max(0.0, now - row.last_failure_at) / leak)
    return max(0, row.failures - forgotten)


async def admit(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    phone: str | None,
    address: str,
    now: float | None = None,
) -> Attempt:
    """Count one password attempt as a failure, or raise `Throttled` (429, Retry-After) while
    a counter that holds it is locked (nothing is counted then)."""
    now = time.time() if now is None else now
    attempt = counters(settings, phone=phone, address=address)
    held = [c for c in (attempt.pair, attempt.phone, attempt.address) if c is not None]
    fresh = False
    async with separate_transaction(
        factory, why="a sign-in attempt is counted whatever becomes of the sign-in"
    ) as session:
        rows = await _locked_rows(session, [c.key for c in held], now)
        known = attempt.pair is not None and _is_known(settings, rows[attempt.pair.key], now)
        until = [
            rows[c.key].locked_until or 0.0 for c in held if not (known and c is attempt.phone)
        ]
        if max(until) > now:
            # `now` was read before the rows' locks were granted: a lock set meanwhile may
            # reach a little past now + the cap.
            retry_after = max(1, min(math.ceil(max(until) - now), settings.login_lock_max_seconds))
            raise Throttled(headers={"Retry-After": str(retry_after)}, retry_after=retry_after)
        for counter in held:
            row = rows[counter.key]
            fresh = fresh or not row.failures
            failures = remembered(settings, row, counter.allowance, now) + 1
            lock = lock_seconds(settings, failures, counter.allowance)
            leak = settings.login_failure_decay_seconds / counter.allowance
            row.failures = failures
            row.last_failure_at = now
            row.locked_until = now + lock if lock else None
            row.expires_at = max(
                now + lock,
                now + failures * leak,
                (row.last_success_at or 0.0) + settings.login_known_address_days * DAY,
            )
    if fresh:
        await _forget_expired(factory, now)
    return attempt


async def succeeded(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    attempt: Attempt,
    *,
    now: float | None = None,
) -> None:
    """The admitted attempt signed in: clear its pair and phone, remember the address as
    known to the phone, and take the attempt off the address counter."""
    now = time.time() if now is None else now
    async with separate_transaction(
        factory, why="a success clears the failure counters of its phone"
    ) as session:
        if attempt.pair is not None:
            await session.execute(
                update(SignInFailure)
                .where(SignInFailure.key == attempt.pair.key)
                .values(
                    failures=0,
                    last_failure_at=None,
                    locked_until=None,
                    last_success_at=now,
                    expires_at=now + settings.login_known_address_days * DAY,
                )
            )
        if attempt.phone is not None:
            await session.execute(
                update(SignInFailure)
                .where(SignInFailure.key == attempt.phone.key)
                .values(failures=0, last_failure_at=None, locked_until=None, expires_at=now)
            )
        allowance = attempt.address.allowance
        await session.execute(
            update(SignInFailure)
            .where(SignInFailure.key == attempt.address.key, SignInFailure.failures > 0)
            .values(
                failures=SignInFailure.failures - 1,
                locked_until=case(
                    (SignInFailure.failures - 1 < allowance, None),
                    else_=SignInFailure.locked_until,
                ),
            )
        )


async def _locked_rows(
    session: AsyncSession, keys: list[str], now: float
) -> dict[str, SignInFailure]:
    """The counters' rows, made when missing and locked in key order (no deadlock between
    two attempts that share counters)."""
    keys = sorted(keys)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(SignInFailure)
        .values([{"key": key, "failures": 0, "expires_at": now} for key in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    found = (
        await session.execute(
            select(SignInFailure)
            .where(SignInFailure.key.in_(keys))
            .order_by(SignInFailure.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalars()
    return {row.key: row for row in found}


def _is_known(settings: Settings, pair: SignInFailure, now: float) -> bool:
    return (
        pair.last_success_at is not None
        and pair.last_success_at >= now - settings.login_known_address_days * DAY
    )


async def _forget_expired(factory: async_sessionmaker[AsyncSession], now: float) -> None:
    """Housekeeping when a counter starts afresh: drop a batch of rows that hold nothing any
    more.  Rows another attempt has locked are skipped, never waited for."""
    async with separate_transaction(factory, why="housekeeping apart from any attempt") as session:
        expired = (
            select(SignInFailure.key)
            .where(SignInFailure.expires_at < now)
            .limit(_HOUSEKEEPING_BATCH)
            .with_for_update(skip_locked=True)
        )
        await session.execute(
            delete(SignInFailure)
            .where(SignInFailure.key.in_(expired.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
