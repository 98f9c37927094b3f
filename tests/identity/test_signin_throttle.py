"""Password sign-in throttling, tried as the attacker and as the owner: only failures count,
per phone with address, per phone and per address, with locks that grow and are capped; a
success clears its phone; a stranger cannot keep the owner of a phone out."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import signin_guard
from app.models.kit import SignInFailure
from tests.fixtures.factories import make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import assert_oauth_error, password_login

WRONG = "not-the-password-9"
LOCK = 60


class FakeTime:
    """The guard's clock, moved by hand: a test never depends on how fast it runs."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(signin_guard, "time", fake)
    return fake


@pytest.fixture
def policy(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small allowances and a first lock of a minute, so that tests stay short."""
    settings = app.state.settings
    monkeypatch.setattr(settings, "login_failures_per_pair", 3)
    monkeypatch.setattr(settings, "login_failures_per_phone", 6)
    monkeypatch.setattr(settings, "login_failures_per_address", 1000)
    monkeypatch.setattr(settings, "login_lock_base_seconds", LOCK)
    monkeypatch.setattr(settings, "login_lock_max_seconds", 900)
    monkeypatch.setattr(settings, "login_failure_decay_seconds", 3600)
    monkeypatch.setattr(settings, "trust_forwarded_for", True)


def at(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def assert_locked(r: httpx.Response, seconds: int) -> None:
    assert_problem(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) == seconds


@pytest.mark.usefixtures("policy")
class TestFailuresOnly:
    async def test_a_secretary_on_three_devices_and_a_test_run_is_never_locked_out(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        secretary = await make_user(db, name="书记")
        # Far more sign-ins than any allowance, from one address and from several.
        for i in range(20):
            r = await password_login(client, secretary.phone, **at(f"10.1.0.{i % 4}"))
            assert r.status_code == 200, r.text
            clock.advance(1)

    async def test_the_pair_locks_after_its_allowance_even_for_the_right_password(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        user = await make_user(db)
        for _ in range(3):
            assert_oauth_error(
                await password_login(client, user.phone, WRONG, **at("10.2.0.1")),
                400,
                "invalid_grant",
            )
        # Locked: the password is not even looked at, right or wrong.
        assert_locked(await password_login(client, user.phone, **at("10.2.0.1")), LOCK)
        assert_locked(await password_login(client, user.phone, WRONG, **at("10.2.0.1")), LOCK)
        clock.advance(LOCK)
        assert (await password_login(client, user.phone, **at("10.2.0.1"))).status_code == 200

    async def test_locks_grow_and_are_capped(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        clock: FakeTime,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_lock_max_seconds", 300)
        user = await make_user(db)
        for _ in range(2):
            await password_login(client, user.phone, WRONG, **at("10.3.0.1"))
        seen = []
        for _ in range(5):
            assert_oauth_error(
                await password_login(client, user.phone, WRONG, **at("10.3.0.1")),
                400,
                "invalid_grant",
            )
            r = await password_login(client, user.phone, WRONG, **at("10.3.0.1"))
            assert_problem(r, 429, "too_many_requests")
            seen.append(int(r.headers["retry-after"]))
            clock.advance(seen[-1])
        assert seen == [LOCK, 2 * LOCK, 4 * LOCK, 300, 300]

    async def test_a_success_resets_the_phone(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        user = await make_user(db)
        for _ in range(5):
            for _ in range(2):
                r = await password_login(client, user.phone, WRONG, **at("10.4.0.1"))
                assert_oauth_error(r, 400, "invalid_grant")
            assert (await password_login(client, user.phone, **at("10.4.0.1"))).status_code == 200

    async def test_failures_leak_away(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        user = await make_user(db)
        for _ in range(2):
            await password_login(client, user.phone, WRONG, **at("10.5.0.1"))
        # The pair forgets one failure every 3600 / 3 seconds: two hours later it holds none,
        # and three more failures are free again.
        clock.advance(2 * 3600)
        for _ in range(3):
            r = await password_login(client, user.phone, WRONG, **at("10.5.0.1"))
            assert_oauth_error(r, 400, "invalid_grant")
        assert_locked(await password_login(client, user.phone, **at("10.5.0.1")), LOCK)

    async def test_keys_hold_no_phone_and_no_address(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: FakeTime,
    ) -> None:
        user = await make_user(db)
        await password_login(client, user.phone, WRONG, **at("10.6.0.1"))
        async with sessionmaker() as s:
            keys = list((await s.execute(select(SignInFailure.key))).scalars())
        assert len(keys) == 3
        assert not any(user.phone in key or "10.6.0.1" in key for key in keys)

    async def test_rows_that_hold_nothing_are_forgotten(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: FakeTime,
    ) -> None:
        user = await make_user(db)
        for i in range(3):
            await password_login(client, f"1370000000{i}", WRONG, **at("10.12.0.1"))
        assert (await password_login(client, user.phone, **at("10.12.0.2"))).status_code == 200
        async with sessionmaker() as s:
            before = set((await s.execute(select(SignInFailure.key))).scalars())
        # A day later the failures have leaked away; the success is remembered for 30 days.
        clock.advance(86400)
        await password_login(client, "13700000009", WRONG, **at("10.12.0.3"))
        async with sessionmaker() as s:
            rows = {r.key: r for r in (await s.execute(select(SignInFailure))).scalars()}
        kept = before & set(rows)
        assert len(kept) == 1
        assert rows[kept.pop()].last_success_at is not None
        assert len(rows) == 4  # the one remembered success, the new attempt's three


@pytest.mark.usefixtures("policy")
class TestStrangers:
    async def test_guesses_spread_over_addresses_meet_the_phone_ceiling(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        user = await make_user(db)
        for i in range(6):
            r = await password_login(client, user.phone, WRONG, **at(f"10.7.0.{i}"))
            assert_oauth_error(r, 400, "invalid_grant")
        # A seventh address, never seen before, is refused even with the right password.
        assert_locked(await password_login(client, user.phone, **at("10.7.1.1")), LOCK)

    async def test_a_stranger_cannot_keep_the_owner_out(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        owner = await make_user(db)
        home = "10.8.0.1"
        assert (await password_login(client, owner.phone, **at(home))).status_code == 200
        # A stranger fails against the owner's phone from many addresses, hour after hour,
        # as often as the locks allow.
        for hour in range(6):
            for i in range(7):
                await password_login(client, owner.phone, WRONG, **at(f"10.8.{hour + 1}.{i}"))
            # The phone is locked for addresses it does not know...
            r = await password_login(client, owner.phone, **at(f"10.8.{hour + 1}.99"))
            assert_problem(r, 429, "too_many_requests")
            # ...but its owner signs in from where they signed in before.
            assert (await password_login(client, owner.phone, **at(home))).status_code == 200
            clock.advance(3600)

    async def test_the_stranger_locked_at_his_address_stays_locked_after_the_owner_signs_in(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: FakeTime
    ) -> None:
        owner = await make_user(db)
        assert (await password_login(client, owner.phone, **at("10.9.0.1"))).status_code == 200
        for _ in range(3):
            await password_login(client, owner.phone, WRONG, **at("10.9.0.2"))
        assert (await password_login(client, owner.phone, **at("10.9.0.1"))).status_code == 200
        assert_locked(await password_login(client, owner.phone, WRONG, **at("10.9.0.2")), LOCK)


@pytest.mark.usefixtures("policy")
class TestAddress:
    async def test_many_members_behind_one_address_sign_in(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        clock: FakeTime,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_address", 4)
        members = [await make_user(db) for _ in range(6)]
        # Successes do not count towards the address.
        for _ in range(3):
            for member in members:
                r = await password_login(client, member.phone, **at("10.10.0.1"))
                assert r.status_code == 200, r.text
        # Failures do, from any phone: past the allowance the address waits.
        for member in members[:4]:
            await password_login(client, member.phone, WRONG, **at("10.10.0.1"))
        assert_locked(await password_login(client, members[5].phone, **at("10.10.0.1")), LOCK)
        # Another address is not affected.
        assert (
            await password_login(client, members[5].phone, **at("10.10.0.2"))
        ).status_code == 200

    async def test_not_a_phone_counts_on_the_address(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        clock: FakeTime,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_address", 2)
        user = await make_user(db)
        for name in ("admin", "root"):
            r = await password_login(client, name, WRONG, **at("10.11.0.1"))
            assert_oauth_error(r, 400, "invalid_grant")
        assert_locked(await password_login(client, user.phone, **at("10.11.0.1")), LOCK)


@pytest.mark.postgres_only
@pytest.mark.committing
class TestConcurrentGuesses:
    async def test_a_burst_of_guesses_gets_the_allowance_and_no_more(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_pair", 5)
        monkeypatch.setattr(app.state.settings, "login_lock_base_seconds", 3600)
        user = await make_user(db)
        answers = await asyncio.gather(
            *(password_login(client, user.phone, WRONG) for _ in range(30))
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [400] * 5 + [429] * 25, [r.text for r in answers]

    async def test_a_burst_over_many_phones_counts_every_failure_on_the_address(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "login_failures_per_address", 7)
        monkeypatch.setattr(app.state.settings, "login_lock_base_seconds", 3600)
        answers = await asyncio.gather(
            *(password_login(client, f"137000000{i:02d}", WRONG) for i in range(30))
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [400] * 7 + [429] * 23, [r.text for r in answers]
