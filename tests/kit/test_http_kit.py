"""Request ids, problem+json rendering, language, ETags, access logs, metrics."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from app.core.i18n import negotiate
from app.core.logging import JsonFormatter


class TestRequestId:
    async def test_generated_when_missing(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz")
        assert len(r.headers["X-Request-ID"]) == 32

    async def test_incoming_id_is_echoed(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz", headers={"X-Request-ID": "abc-123"})
        assert r.headers["X-Request-ID"] == "abc-123"

    @pytest.mark.parametrize("bad", ["x" * 65, "has space", "<script>"])
    async def test_unsafe_incoming_id_is_replaced(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        r = await client.get("http://test/healthz", headers={"X-Request-ID": bad})
        assert r.headers["X-Request-ID"] != bad


class TestProblems:
    async def test_unknown_route_is_problem_json(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/no/such/thing")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "not_found"
        assert body["status"] == 404
        assert body["type"] == "urn:quyu:problem:not_found"
        assert body["title"] == "资源不存在"

    async def test_english_on_request(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/no/such/thing", headers={"Accept-Language": "en-US,en;q=0.9"})
        assert r.json()["title"] == "Not found"

    async def test_method_not_allowed(self, client: httpx.AsyncClient) -> None:
        r = await client.delete("http://test/healthz")
        assert r.status_code == 405
        assert r.json()["code"] == "method_not_allowed"
        assert r.headers["Allow"] == "GET"

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            # Served by two routes each: the 405 used to name only the first one's method.
            ("DELETE", "/me", "GET, PATCH"),
            ("PUT", "/orgs/2b1f0c9e-0000-4000-8000-000000000000", "GET, PATCH"),
            ("PATCH", "/orgs", "GET, POST"),
            ("GET", "/auth/token", "POST"),
        ],
    )
    async def test_405_allow_lists_every_method_of_the_path(
        self, client: httpx.AsyncClient, method: str, path: str, allow: str
    ) -> None:
        r = await client.request(method, path)
        assert r.status_code == 405
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "method_not_allowed"
        assert r.headers["Allow"] == allow
        for listed in allow.split(", "):
            again = await client.request(listed, path)
            assert again.status_code != 405, listed

    async def test_body_that_is_not_utf8_is_malformed_body(self, client: httpx.AsyncClient) -> None:
        r = await client.post(
            "/auth/register",
            content=b'{"name": "\xef\xbb", "phone": "13912345678", "password": "x"}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "malformed_body"

    @pytest.mark.parametrize(
        ("header", "lang"),
        [
            (None, "zh-CN"),
            ("en", "en"),
            ("en-GB", "en"),
            ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
            ("fr, en;q=0.5", "en"),
            ("de", "zh-CN"),
            ("en;q=garbage", "zh-CN"),
        ],
    )
    def test_language_negotiation(self, header: str | None, lang: str) -> None:
        assert negotiate(header) == lang


class TestETag:
    async def test_if_none_match_gives_304(self, client: httpx.AsyncClient) -> None:
        first = await client.get("http://test/healthz")
        etag = first.headers["ETag"]
        again = await client.get("http://test/healthz", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["ETag"] == etag

    async def test_other_etag_gives_200(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz", headers={"If-None-Match": '"nope"'})
        assert r.status_code == 200


class TestAccessLog:
    async def test_one_line_per_request_with_route_template(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="quyu.access"):
            await client.get("/orgs/2b1f0c9e-0000-4000-8000-000000000000?q=13912345678")
        records = [r for r in caplog.records if r.name == "quyu.access"]
        assert len(records) == 1
        line = JsonFormatter().format(records[0])
        entry = json.loads(line)
        assert entry["route"] == "/api/v1/orgs/{org_id}"
        assert entry["status"] == 401
        assert "13912345678" not in line
        assert "2b1f0c9e" not in line

    def test_formatter_includes_request_id(self) -> None:
        from app.core.logging import request_id_var

        token = request_id_var.set("rid-1")
        try:
            record = logging.LogRecord("x", logging.INFO, "", 0, "hello", (), None)
            entry = json.loads(JsonFormatter().format(record))
        finally:
            request_id_var.reset(token)
        assert entry["request_id"] == "rid-1"
        assert entry["msg"] == "hello"


class TestMetrics:
    async def test_requests_counted_per_route_template(self, client: httpx.AsyncClient) -> None:
        await client.get("/orgs/2b1f0c9e-0000-4000-8000-000000000000")
        r = await client.get("http://test/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert 'route="/api/v1/orgs/{org_id}"' in text
        assert "quyu_http_request_duration_seconds_bucket" in text
        assert "2b1f0c9e" not in text
