"""Idempotency-Key on POST: replay, reuse with another body, in flight, 5xx not kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI, Response
from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import clock
from app.core.errors import install_error_handlers
from app.core.middleware import ETagMiddleware, IdempotencyMiddleware, RequestContextMiddleware
from app.core.outbox import record_event
from app.core.tokens import issue_access_token
from app.models.kit import IdempotencyRecord, OutboxEvent


class Thing(BaseModel):
    name: str


@pytest.fixture
def gate() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
async def kit_client(
    sessionmaker: async_sessionmaker[AsyncSession], gate: asyncio.Event
) -> AsyncIterator[httpx.AsyncClient]:
    """A small app with the kit's middleware and one creating endpoint."""
    app = FastAPI()
    app.state.sessionmaker = sessionmaker
    install_error_handlers(app)

    @app.post("/secrets", status_code=201)
    async def create_secret(thing: Thing, response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "no-store"
        async with sessionmaker() as session, session.begin():
            event = record_event(session, "secret.created", {"name": thing.name})
            await session.flush()
            return {"id": str(event.id)}

    @app.post("/things", status_code=201)
    async def create_thing(thing: Thing) -> dict[str, str]:
        if thing.name == "slow":
            await gate.wait()
        if thing.name == "boom":
            raise RuntimeError("boom")
        async with sessionmaker() as session, session.begin():
            event = record_event(session, "thing.created", {"name": thing.name})
            await session.flush()
            return {"id": str(event.id), "name": thing.name}

    app.add_middleware(IdempotencyMiddleware, ttl_seconds=86400)
    app.add_middleware(ETagMiddleware)
    app.add_middleware(RequestContextMiddleware)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
        yield client


async def _events(db: AsyncSession) -> int:
    return (await db.execute(select(func.count(OutboxEvent.id)))).scalar_one()


class TestIdempotencyKey:
    async def test_same_key_same_body_replays_first_answer(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-1"}
        first = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        second = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert await _events(db) == 1

    async def test_same_key_other_body_is_422(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-2"}
        await kit_client.post("/things", json={"name": "a"}, headers=headers)
        r = await kit_client.post("/things", json={"name": "b"}, headers=headers)
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "idempotency_key_reused"
        assert await _events(db) == 1

    async def test_first_still_in_flight_is_409(
        self, kit_client: httpx.AsyncClient, gate: asyncio.Event, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-3"}
        first = asyncio.create_task(
            kit_client.post("/things", json={"name": "slow"}, headers=headers)
        )
        for _ in range(200):
            if (await db.execute(select(func.count(IdempotencyRecord.id)))).scalar_one():
                break
            await asyncio.sleep(0.01)
        second = await kit_client.post("/things", json={"name": "slow"}, headers=headers)
        gate.set()
        assert (await first).status_code == 201
        assert second.status_code == 409
        assert second.json()["code"] == "idempotency_in_flight"

    async def test_server_error_is_not_kept(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-4"}
        r = await kit_client.post("/things", json={"name": "boom"}, headers=headers)
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error"
        count = select(func.count(IdempotencyRecord.id))
        assert (await db.execute(count)).scalar_one() == 0

    async def test_no_store_answers_are_not_kept(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-secret"}
        for _ in range(2):
            r = await kit_client.post("/secrets", json={"name": "a"}, headers=headers)
            assert r.status_code == 201
            assert "Idempotent-Replayed" not in r.headers
        count = select(func.count(IdempotencyRecord.id))
        assert (await db.execute(count)).scalar_one() == 0

    async def test_keys_are_per_caller(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        tokens = [
            issue_access_token(kind="client", subject=name, scopes=frozenset({"x"}))[0]
            for name in ("c1", "c2")
        ]
        for token in tokens:
            r = await kit_client.post(
                "/things",
                json={"name": "a"},
                headers={"Idempotency-Key": "shared", "Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201
            assert "Idempotent-Replayed" not in r.headers
        assert await _events(db) == 2

    async def test_expired_record_runs_again(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-5"}
        await kit_client.post("/things", json={"name": "a"}, headers=headers)
        await db.execute(
            update(IdempotencyRecord).values(expires_at=clock.now() - timedelta(seconds=1))
        )
        await db.commit()
        r = await kit_client.post("/things", json={"name": "a"}, headers=headers)
        assert r.status_code == 201
        assert "Idempotent-Replayed" not in r.headers
        assert await _events(db) == 2

    @pytest.mark.parametrize("key", ["", "x" * 256, "héllo", "a b"])
    async def test_invalid_key_is_422(
        self, kit_client: httpx.AsyncClient, db: AsyncSession, key: str
    ) -> None:
        r = await kit_client.post(
            "/things", json={"name": "a"}, headers={b"Idempotency-Key": key.encode()}
        )
        assert r.status_code == 422
        assert r.json()["code"] == "idempotency_key_invalid"
        assert await _events(db) == 0

    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_concurrent_retries_create_once(
        self, kit_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "k-burst"}
        answers = await asyncio.gather(
            *(kit_client.post("/things", json={"name": "a"}, headers=headers) for _ in range(20))
        )
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {201, 409}
        assert statuses.count(201) >= 1
        assert await _events(db) == 1
