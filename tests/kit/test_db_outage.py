"""API routes while the database is away: 503 `service_unavailable` with Retry-After and one
warning line, no traceback; answered normally again once it is back, without a restart.

The database is taken away for real: the app reaches PostgreSQL through a TCP proxy that is
stopped (new connections refused, open ones cut) and started again.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.fixtures.factories import PASSWORD, login, make_user


def _login_form(phone: str) -> dict[str, str]:
    return {"grant_type": "password", "username": phone, "password": PASSWORD}


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["Retry-After"] == "5"
    assert r.json()["code"] == "service_unavailable"


@pytest.mark.postgres_only
@pytest.mark.committing
async def test_api_answers_503_while_database_is_away_then_recovers(
    db: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    from app.config import get_settings
    from app.main import create_app
    from tests.conftest import DATABASE_URL
    from tests.fixtures.proxy import TcpProxy

    user = await make_user(db)
    headers = await login(db, user)

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = DATABASE_URL.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    settings = get_settings().model_copy(update={"database_url": url})
    app = create_app(settings, configure_logs=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c,
        ):
            assert (await c.get("/me", headers=headers)).status_code == 200
            assert (await c.post("/auth/token", data=_login_form(user.phone))).status_code == 200

            await proxy.stop()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                me = await c.get("/me", headers=headers)
                token = await c.post("/auth/token", data=_login_form(user.phone))
                english = await c.get("/me", headers={**headers, "Accept-Language": "en"})
                keyed = await c.post(
                    "/auth/token",
                    data=_login_form(user.phone),
                    headers={"Idempotency-Key": "outage-1"},
                )
            for r in (me, token, english, keyed):
                _assert_unavailable(r)
            assert me.json()["title"] == "服务暂不可用"
            assert english.json()["title"] == "Service unavailable"
            assert (await c.get("http://t/readyz")).status_code == 503

            warnings = [r for r in caplog.records if r.name == "quyu.errors"]
            assert len(warnings) == 4
            for record in warnings:
                assert record.levelno == logging.WARNING
                assert record.getMessage() == "database unavailable"
                assert record.exc_info is None
            assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
            assert user.phone not in caplog.text

            await proxy.start()
            me = await c.get("/me", headers=headers)
            assert me.status_code == 200, me.text
            assert me.json()["id"] == str(user.id)
            token = await c.post("/auth/token", data=_login_form(user.phone))
            assert token.status_code == 200, token.text
            assert (await c.get("http://t/readyz")).status_code == 200
    finally:
        await proxy.stop()


@pytest.mark.postgres_only
@pytest.mark.committing
async def test_a_wrong_query_stays_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    """The database is up but the query is wrong (the table is gone): a bug, not an outage."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from app.config import get_settings
    from app.main import create_app

    app: FastAPI = create_app(get_settings(), configure_logs=False)

    @app.get("/api/v1/_broken")
    async def broken() -> None:
        async with app.state.engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table_here"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        with caplog.at_level(logging.INFO):
            r = await c.get("/api/v1/_broken")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert "Retry-After" not in r.headers
    errors = [rec for rec in caplog.records if rec.name == "quyu.errors"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert errors[0].exc_info is not None


@pytest.mark.postgres_only
@pytest.mark.committing
async def test_a_keyed_request_cut_off_from_the_database_leaves_its_key_free(
    db: AsyncSession,
) -> None:
    """The database goes away while a keyed request is at work (its changes flushed, not
    committed): 503, nothing kept, and once it is back the same retry runs and is kept."""
    import asyncio

    from sqlalchemy import func, select

    from app.config import get_settings
    from app.db.session import create_engine, create_sessionmaker
    from app.models.kit import IdempotencyRecord, OutboxEvent
    from tests.conftest import DATABASE_URL
    from tests.fixtures.proxy import TcpProxy
    from tests.kit.test_idempotency import kit_app

    headers = {**await login(db, await make_user(db)), "Idempotency-Key": "cut-1"}
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = DATABASE_URL.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    settings = get_settings().model_copy(update={"database_url": url})
    engine = create_engine(settings)
    gate = asyncio.Event()
    app = kit_app(create_sessionmaker(engine), settings, gate, [])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def counts() -> tuple[int, int]:
        events = select(func.count(OutboxEvent.id)).where(OutboxEvent.topic == "thing.created")
        kept = select(func.count(IdempotencyRecord.id))
        return (await db.execute(events)).scalar_one(), (await db.execute(kept)).scalar_one()

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as c:
            first = asyncio.create_task(c.post("/things", json={"name": "slow"}, headers=headers))
            await asyncio.sleep(0.5)  # authenticated, its event flushed, waiting at the gate
            await proxy.stop()
            gate.set()
            _assert_unavailable(await first)
            assert await counts() == (0, 0)

            await proxy.start()
            retry = await c.post("/things", json={"name": "slow"}, headers=headers)
            assert retry.status_code == 201, retry.text  # never 409: nothing blocks the key
            assert "Idempotent-Replayed" not in retry.headers
            again = await c.post("/things", json={"name": "slow"}, headers=headers)
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.content == retry.content
            await db.commit()
            assert await counts() == (1, 1)
    finally:
        await proxy.stop()
        await engine.dispose()


@pytest.mark.postgres_only
@pytest.mark.committing
async def test_a_keyed_registration_while_the_database_is_away_can_be_retried() -> None:
    from app.config import get_settings
    from app.main import create_app
    from tests.conftest import DATABASE_URL
    from tests.fixtures.factories import next_phone
    from tests.fixtures.proxy import TcpProxy

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = DATABASE_URL.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    app = create_app(get_settings().model_copy(update={"database_url": url}), configure_logs=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    body = {"phone": next_phone(), "password": "long-enough-1", "name": "断库"}
    headers = {"Idempotency-Key": "away-1"}
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c,
        ):
            await proxy.stop()
            _assert_unavailable(await c.post("/auth/register", json=body, headers=headers))
            await proxy.start()
            first = await c.post("/auth/register", json=body, headers=headers)
            assert first.status_code == 201, first.text
            again = await c.post("/auth/register", json=body, headers=headers)
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.content == first.content
    finally:
        await proxy.stop()
