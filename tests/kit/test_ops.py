from __future__ import annotations

import httpx


class TestHealthz:
    async def test_alive(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}


class TestReadyz:
    async def test_ready(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/readyz")
        assert r.status_code == 200
