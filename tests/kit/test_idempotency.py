"""Idempotency-Key on POST, answered in the route layer after authentication: replay, reuse
with another body, answers kept only with the work they did, per session (or client), and
anonymous requests only where an endpoint opts in, under a throttle."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.authz.guards import CurrentPrincipal
from app.config import Settings, get_settings
from app.core import clock
from app.core.errors import AppError, install_error_handlers
from app.core.middleware import ETagMiddleware, RequestContextMiddleware
from app.core.outbox import record_event
from app.deps import DbSession
from app.idempotency import IdempotentRoute, replays_anonymous
from app.models.auth import UserSession
from app.models.kit import IdempotencyRecord, OutboxEvent
from app.models.user import User
from tests.fixtures.factories import login, make_client, make_user
from tests.fixtures.problems import assert_problem

ANONYMOUS_LIMIT = 3


class Thing(BaseModel):
    name: str


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def fail_once() -> list[bool]:
    """Push True: the next "flaky" thing to arrive is refused (409) once the gate opens."""
    return []


def kit_app(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    gate: asyncio.Event,
    fail_once: list[bool],
) -> FastAPI:
    """A small app with the kit's middleware, the idempotent route class and a few creating
    endpoints, each writing an outbox event through the request's session."""
    app = FastAPI()
    app.state.sessionmaker = sessionmaker
    app.state.settings = settings
    install_error_handlers(app)
    router = APIRouter(route_class=IdempotentRoute)

    @router.post("/things", status_code=201)
    async def create_thing(thing: Thing, db: DbSession, who: CurrentPrincipal) -> dict[str, str]:
        event = record_event(db, "thing.created", {"name": thing.name})
        await db.flush()
        # The first "flaky" thing to arrive is refused, once the gate opens.
        refuse = thing.name == "flaky" and bool(fail_once) and fail_once.pop()
        if thing.name in ("slow", "flaky"):
            await gate.wait()
        if refuse:
            raise AppError("conflict")
        if thing.name == "boom":
            raise RuntimeError("boom")
        if thing.name == "refused":
            raise AppError("conflict")
        if thing.name == "db-away":
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))
        return {"id": str(event.id), "name": thing.name}

    @router.post("/people", status_code=201)
    async def add_person(thing: Thing, db: DbSession, who: CurrentPrincipal) -> dict[str, str]:
        # Not flushed: a taken phone fails when the work is flushed at the end.
        db.add(User(phone=thing.name, name="重复", password_hash="x", skills=[]))
        return {"phone": thing.name}

    @router.post("/touch", status_code=201)
    async def touch(db: DbSession, who: CurrentPrincipal) -> dict[str, str]:
        event = record_event(db, "thing.created", {"name": "touched"})
        await db.flush()
        return {"id": str(event.id)}

    @router.post("/secrets", status_code=201)
    async def create_secret(
        thing: Thing, response: Response, db: DbSession, who: CurrentPrincipal
    ) -> dict[str, str]:
        response.headers["Cache-Control"] = "no-store"
        event = record_event(db, "secret.created", {"name": thing.name})
        await db.flush()
        return {"id": str(event.id)}

    @router.post("/open", status_code=201)
    async def create_open(thing: Thing, db: DbSession) -> dict[str, str]:
        event = record_event(db, "open.created", {"name": thing.name})
        await db.flush()
        return {"id": str(event.id)}

    @router.post("/welcome", status_code=201)
    @replays_anonymous
    async def create_welcome(thing: Thing, db: DbSession) -> dict[str, str]:
        event = record_event(db, "welcome.created", {"name": thing.name})
        await db.flush()
        return {"id": str(event.id), "name": thing.name}

    app.include_router(router)
    app.add_middleware(ETagMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


@pytest.fixture
async def kit_client(
    sessionmaker: async_sessionmaker[AsyncSession], gate: asyncio.Event, fail_once: list[bool]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = get_settings().model_copy(
        update={"idempotency_anonymous_per_address": ANONYMOUS_LIMIT}
    )
    app = kit_app(sessionmaker, settings, gate, fail_once)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
        yield client


@pytest.fixture
async def auth(db: AsyncSession) -> dict[str, str]:
    return await login(db, await make_user(db))


async def _events(db: AsyncSession, topic: str = "thing.created") -> int:
    return (
        await db.execute(select(func.count(OutboxEvent.id)).where(OutboxEvent.topic == topic))
    ).scalar_one()


async def _records(db: AsyncSession) -> int:
    return (await db.execute(select(func.count(IdempotencyRecord.id)))).scalar_one()


def _sample(outcome: str, route: str = "/things") -> float:
    value = REGISTRY.get_sample_value(
        "quyu_idempotency_total", {"method": "POST", "route": route, "outcome": outcome}
    )
    return value or 0.0


class TestIdempotencyKey:
    async def test_same_key_same_body_replays_first_answer(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-1"}
        first = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        second = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.headers["content-type"] == first.headers["content-type"]
        assert "Idempotent-Replayed" not in first.headers
        assert await _events(db) == 1
        assert await _records(db) == 1

    async def test_a_body_the_endpoint_does_not_take_is_not_read(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-touch"}
        first = await kit_client.post("/touch", headers=headers)
        junk = await kit_client.post("/touch", content=b"x" * (2 * 1024 * 1024), headers=headers)
        assert first.status_code == junk.status_code == 201
        assert junk.headers["Idempotent-Replayed"] == "true"
        assert junk.content == first.content
        assert await _events(db) == 1

    async def test_same_key_other_body_is_422(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-2"}
        await kit_client.post("/things", json={"name": "a"}, headers=headers)
        r = await kit_client.post("/things", json={"name": "b"}, headers=headers)
        assert_problem(r, 422, "idempotency_key_reused")
        assert await _events(db) == 1

    async def test_server_error_is_not_kept_and_frees_the_key(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-4"}
        r = await kit_client.post("/things", json={"name": "boom"}, headers=headers)
        assert_problem(r, 500, "internal_error")
        assert await _records(db) == 0
        assert await _events(db) == 0  # the work was rolled back with it
        again = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert again.status_code == 201, again.text
        assert "Idempotent-Replayed" not in again.headers

    async def test_database_error_is_503_and_does_not_block_the_key(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-db"}
        r = await kit_client.post("/things", json={"name": "db-away"}, headers=headers)
        assert_problem(r, 503, "service_unavailable")
        assert await _records(db) == 0
        assert await _events(db) == 0
        again = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert again.status_code == 201, again.text  # never 409 in flight
        assert await _events(db) == 1

    async def test_a_bug_in_the_work_stays_a_500_not_an_idempotency_answer(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        taken = (await make_user(db)).phone
        headers = {**auth, "Idempotency-Key": "k-dupe"}
        r = await kit_client.post("/people", json={"name": taken}, headers=headers)
        assert_problem(r, 500, "internal_error")
        assert await _records(db) == 0

    async def test_refused_request_is_not_kept(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-409"}
        r = await kit_client.post("/things", json={"name": "refused"}, headers=headers)
        assert_problem(r, 409, "conflict")
        assert await _records(db) == 0
        again = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert again.status_code == 201, again.text

    async def test_invalid_body_is_not_kept(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-422"}
        r = await kit_client.post("/things", json={"nom": "a"}, headers=headers)
        assert_problem(r, 422, "validation_error")
        assert await _records(db) == 0
        again = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert again.status_code == 201, again.text

    async def test_no_store_answers_are_not_kept(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-secret"}
        for _ in range(2):
            r = await kit_client.post("/secrets", json={"name": "a"}, headers=headers)
            assert r.status_code == 201
            assert "Idempotent-Replayed" not in r.headers
        assert await _records(db) == 0

    async def test_keys_are_per_caller(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        other = await login(db, await make_user(db))
        _client, client_headers = await make_client(db)
        for headers in (auth, other, client_headers):
            r = await kit_client.post(
                "/things", json={"name": "a"}, headers={**headers, "Idempotency-Key": "shared"}
            )
            assert r.status_code == 201, r.text
            assert "Idempotent-Replayed" not in r.headers
        assert await _events(db) == 3

    async def test_answers_are_bound_to_the_session(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db)
        phone, laptop = await login(db, user), await login(db, user)
        keyed = {"Idempotency-Key": "k-session"}
        first = await kit_client.post("/things", json={"name": "a"}, headers={**phone, **keyed})
        assert first.status_code == 201
        # Another session of the same person is another key space.
        r = await kit_client.post("/things", json={"name": "a"}, headers={**laptop, **keyed})
        assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
        # Signed out: the session's answers are replayed to nobody, its token is refused.
        await db.execute(
            update(UserSession).where(UserSession.user_id == user.id).values(revoked_at=clock.now())
        )
        await db.commit()
        r = await kit_client.post("/things", json={"name": "a"}, headers={**phone, **keyed})
        assert_problem(r, 401, "token_invalid")
        assert await _events(db) == 2

    async def test_unauthenticated_gets_401_never_an_idempotency_answer(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        await kit_client.post(
            "/things", json={"name": "a"}, headers={**auth, "Idempotency-Key": "k-401"}
        )
        for key in ("k-401", "a b"):
            for body in ({"name": "a"}, {"name": "b"}):
                r = await kit_client.post("/things", json=body, headers={"Idempotency-Key": key})
                assert_problem(r, 401, "unauthorized")
                assert "Idempotent-Replayed" not in r.headers
        forged = {"Authorization": "Bearer not-a-token", "Idempotency-Key": "k-401"}
        assert_problem(
            await kit_client.post("/things", json={"name": "b"}, headers=forged),
            401,
            "token_invalid",
        )
        assert await _events(db) == 1

    async def test_expired_record_runs_again(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-5"}
        await kit_client.post("/things", json={"name": "a"}, headers=headers)
        await db.execute(
            update(IdempotencyRecord).values(expires_at=clock.now() - timedelta(seconds=1))
        )
        await db.commit()
        r = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert r.status_code == 201
        assert "Idempotent-Replayed" not in r.headers
        assert await _events(db) == 2
        assert await _records(db) == 1

    async def test_kept_for_the_configured_ttl(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        before = clock.now()
        await kit_client.post(
            "/things", json={"name": "a"}, headers={**auth, "Idempotency-Key": "k-ttl"}
        )
        record = (await db.execute(select(IdempotencyRecord))).scalar_one()
        ttl = timedelta(seconds=get_settings().idempotency_ttl_seconds)
        assert record.expires_at >= before + ttl
        assert record.state == "done" and record.status_code == 201

    @pytest.mark.parametrize("key", ["", "x" * 256, "héllo", "a b"])
    async def test_invalid_key_is_422(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str], key: str
    ) -> None:
        headers = [(k.encode(), v.encode()) for k, v in auth.items()]
        headers.append((b"Idempotency-Key", key.encode()))
        r = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert_problem(r, 422, "idempotency_key_invalid")
        assert await _events(db) == 0

    async def test_replays_and_refusals_are_counted_and_logged_under_the_route(
        self,
        kit_client: httpx.AsyncClient,
        auth: dict[str, str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        before = {o: _sample(o) for o in ("stored", "replayed", "key_reused")}
        requests_before = REGISTRY.get_sample_value(
            "quyu_http_requests_total", {"method": "POST", "route": "/things", "status": "201"}
        )
        headers = {**auth, "Idempotency-Key": "k-metrics"}
        with caplog.at_level(logging.INFO, logger="quyu.idempotency"):
            await kit_client.post("/things", json={"name": "a"}, headers=headers)
            await kit_client.post("/things", json={"name": "a"}, headers=headers)
            await kit_client.post("/things", json={"name": "b"}, headers=headers)
        assert {o: _sample(o) - v for o, v in before.items()} == {
            "stored": 1,
            "replayed": 1,
            "key_reused": 1,
        }
        requests_after = REGISTRY.get_sample_value(
            "quyu_http_requests_total", {"method": "POST", "route": "/things", "status": "201"}
        )
        assert (requests_after or 0) - (requests_before or 0) == 2
        lines = [r for r in caplog.records if r.name == "quyu.idempotency"]
        outcomes: list[Any] = [(r.__dict__["outcome"], r.__dict__["route"]) for r in lines]
        assert outcomes == [
            ("stored", "/things"),
            ("replayed", "/things"),
            ("key_reused", "/things"),
        ]


class TestAnonymous:
    async def test_not_kept_where_the_endpoint_does_not_opt_in(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "anon-1"}
        for _ in range(2):
            r = await kit_client.post("/open", json={"name": "a"}, headers=headers)
            assert r.status_code == 201
            assert "Idempotent-Replayed" not in r.headers
        assert await _events(db, "open.created") == 2
        assert await _records(db) == 0

    async def test_opted_in_replays_the_same_request(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "anon-2"}
        first = await kit_client.post("/welcome", json={"name": "a"}, headers=headers)
        again = await kit_client.post("/welcome", json={"name": "a"}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content
        assert await _events(db, "welcome.created") == 1

    async def test_two_strangers_with_the_same_key_never_collide(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "1"}
        a = await kit_client.post("/welcome", json={"name": "alice"}, headers=headers)
        b = await kit_client.post("/welcome", json={"name": "bob"}, headers=headers)
        assert a.status_code == b.status_code == 201, b.text
        assert "Idempotent-Replayed" not in b.headers
        assert b.json()["name"] == "bob"
        assert await _events(db, "welcome.created") == 2

    async def test_kept_under_a_throttle_per_address(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        for i in range(ANONYMOUS_LIMIT):
            r = await kit_client.post(
                "/welcome", json={"name": f"n{i}"}, headers={"Idempotency-Key": f"t-{i}"}
            )
            assert r.status_code == 201, r.text
        r = await kit_client.post(
            "/welcome", json={"name": "more"}, headers={"Idempotency-Key": "t-more"}
        )
        assert_problem(r, 429, "too_many_requests")
        assert int(r.headers["Retry-After"]) >= 1
        assert await _records(db) == ANONYMOUS_LIMIT
        # Without a key nothing is kept, so the throttle does not apply.
        assert (await kit_client.post("/welcome", json={"name": "x"})).status_code == 201


@pytest.mark.postgres_only
@pytest.mark.committing
class TestConcurrentDuplicates:
    async def test_concurrent_retries_create_once_and_answer_alike(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, auth: dict[str, str]
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-burst"}
        answers = await asyncio.gather(
            *(kit_client.post("/things", json={"name": "a"}, headers=headers) for _ in range(20))
        )
        assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers]
        assert len({r.content for r in answers}) == 1
        assert sum("Idempotent-Replayed" not in r.headers for r in answers) == 1
        assert await _events(db) == 1
        assert await _records(db) == 1

    async def test_a_duplicate_in_flight_answers_the_first_answer(
        self,
        kit_client: httpx.AsyncClient,
        gate: asyncio.Event,
        db: AsyncSession,
        auth: dict[str, str],
    ) -> None:
        headers = {**auth, "Idempotency-Key": "k-slow"}
        first = asyncio.create_task(
            kit_client.post("/things", json={"name": "slow"}, headers=headers)
        )
        await asyncio.sleep(0.3)
        second = asyncio.create_task(
            kit_client.post("/things", json={"name": "slow"}, headers=headers)
        )
        await asyncio.sleep(0.3)
        gate.set()
        one, two = await first, await second
        assert one.status_code == two.status_code == 201, two.text
        assert one.content == two.content
        assert await _events(db) == 1

    async def test_a_duplicate_of_a_first_that_fails_runs_itself(
        self,
        kit_client: httpx.AsyncClient,
        gate: asyncio.Event,
        fail_once: list[bool],
        db: AsyncSession,
        auth: dict[str, str],
    ) -> None:
        """Both are in flight; the first then fails: nothing of it blocks the key."""
        headers = {**auth, "Idempotency-Key": "k-fail"}
        fail_once.append(True)
        first = asyncio.create_task(
            kit_client.post("/things", json={"name": "flaky"}, headers=headers)
        )
        await asyncio.sleep(0.3)
        second = asyncio.create_task(
            kit_client.post("/things", json={"name": "flaky"}, headers=headers)
        )
        await asyncio.sleep(0.3)
        gate.set()
        refused, r = await first, await second
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers
        # The first failed on its own: its refusal, or (when the second had committed by
        # the time it looked) the answer the key now has.
        if refused.status_code == 201:
            assert refused.headers["Idempotent-Replayed"] == "true"
            assert refused.content == r.content
        else:
            assert_problem(refused, 409, "conflict")
        assert await _events(db) == 1
        again = await kit_client.post("/things", json={"name": "flaky"}, headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == r.content
