from __future__ import annotations

import httpx
import pytest


class TestHealthz:
    async def test_alive(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}


class TestReadyz:
    # /readyz opens a connection of its own, which on SQLite waits behind the write lock a
    # rolled-back test holds.
    @pytest.mark.committing
    async def test_ready(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/readyz")
        assert r.status_code == 200


class TestReadyzOutage:
    @pytest.mark.postgres_only
    async def test_503_while_database_is_away_then_200_without_restart(self) -> None:
        from app.config import get_settings
        from app.main import create_app
        from tests.conftest import DATABASE_URL
        from tests.fixtures.proxy import TcpProxy

        proxy = TcpProxy("127.0.0.1", 5432)
        await proxy.start()
        url = DATABASE_URL.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        settings = get_settings().model_copy(update={"database_url": url})
        app = create_app(settings, configure_logs=False)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as c,
        ):
            assert (await c.get("/readyz")).status_code == 200
            await proxy.stop()
            down = await c.get("/readyz")
            assert down.status_code == 503
            assert down.json()["code"] == "service_unavailable"
            assert (await c.get("/healthz")).status_code == 200
            await proxy.start()
            assert (await c.get("/readyz")).status_code == 200
            await proxy.stop()
