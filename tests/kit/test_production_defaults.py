"""Production defaults: documentation off, /metrics not public, security headers on every
answer, `Location` from the public base URL, and a host allow-list.

Each attack is sent to an app built by `create_app` with the settings under test; it shares the
suite app's engine and sessionmaker (and so the test's transaction), without a lifespan of its
own."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import ConfigError, Settings
from app.core.http_policy import host_allowed, host_name
from app.main import create_app
from app.models.organization import Organization
from tests.fixtures.factories import PASSWORD, make_user
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem

EVIL = "evil.example"
PUBLIC = "https://quyu.example.org"
METRICS_TOKEN = secrets.token_urlsafe(32)


def sibling(app: FastAPI, **update: Any) -> FastAPI:
    """An app made by `create_app` with the suite's settings changed by `update`, running on
    the suite app's engine and sessionmaker."""
    other = create_app(app.state.settings.model_copy(update=update), configure_logs=False)
    for name in ("engine", "sessionmaker", "storage", "wechat"):
        setattr(other.state, name, getattr(app.state, name))
    return other


PRODUCTION: dict[str, Any] = {
    "env": "production",
    "public_base_url": PUBLIC,
    "allowed_hosts": ["quyu.example.org"],
}


@asynccontextmanager
async def client_of(application: FastAPI, host: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as c:
        yield c


def regional(parent: Organization) -> dict[str, Any]:
    return {
        "name": "新区域党委",
        "kind": "regional",
        "region_type": "industrial_park",
        "parent_id": str(parent.id),
    }


async def count_orgs(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(Organization))).scalar_one())


class TestDocs:
    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
    async def test_off_in_production(self, app: FastAPI, path: str) -> None:
        async with client_of(sibling(app, **PRODUCTION), "quyu.example.org") as c:
            r = await c.get(path)
        assert_problem(r, 404, "not_found")

    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
    async def test_a_setting_turns_them_on(self, app: FastAPI, path: str) -> None:
        async with client_of(sibling(app, **PRODUCTION, api_docs=True), "quyu.example.org") as c:
            assert (await c.get(path)).status_code == 200

    async def test_on_in_development(self, client: httpx.AsyncClient) -> None:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(f"http://test{path}")).status_code == 200

    async def test_off_in_development_when_turned_off(self, app: FastAPI) -> None:
        async with client_of(sibling(app, api_docs=False), "test") as c:
            assert_problem(await c.get("/openapi.json"), 404, "not_found")


class TestMetrics:
    async def test_not_served_in_production_without_a_token(self, app: FastAPI) -> None:
        async with client_of(sibling(app, **PRODUCTION), "quyu.example.org") as c:
            r = await c.get("/metrics")
        assert_problem(r, 404, "not_found")
        assert "quyu_http" not in r.text

    @pytest.mark.parametrize("env", ["production", "development"])
    async def test_with_a_token_only_to_its_bearer(self, app: FastAPI, env: str) -> None:
        settings = {**PRODUCTION, "env": env, "metrics_token": SecretStr(METRICS_TOKEN)}
        async with client_of(sibling(app, **settings), "quyu.example.org") as c:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {METRICS_TOKEN}"},
                {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            ):
                r = await c.get("/metrics", headers=headers)
                assert_problem(r, 401, "unauthorized")
                assert "quyu_http" not in r.text
            r = await c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200
        assert "quyu_http_requests_total" in r.text

    def test_production_refuses_a_weak_token(self, production_env: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="QUYU_METRICS_TOKEN"):
            Settings(_env_file=None, **production_env, metrics_token="changeme")


class TestSecurityHeaders:
    async def test_nosniff_on_every_answer(self, app: FastAPI, tree: Tree) -> None:
        application = sibling(app, allowed_hosts=["test"])

        async def boom() -> None:
            raise RuntimeError("a bug")

        application.add_api_route("/boom", boom)
        async with client_of(application, "test") as c:
            answers = [
                await c.get("/healthz"),  # 200 JSON
                await c.get("/metrics"),  # 200 text
                await c.get("/nope"),  # 404
                await c.delete("/healthz"),  # 405
                await c.get("/api/v1/me"),  # 401
                await c.get("/api/v1/me", headers=tree.h_member),  # 200, authenticated
                await c.post("/api/v1/orgs", headers=tree.h_s1, json={}),  # 422
                await c.get("/boom"),  # the last-resort 500
                await c.get("/healthz", headers={"Host": EVIL}),  # probes answer any host
                await c.get("/api/v1/me", headers={"Host": EVIL}),  # host refused
            ]
        statuses = [r.status_code for r in answers]
        assert statuses == [200, 200, 404, 405, 401, 200, 422, 500, 200, 400]
        for r in answers:
            assert r.headers["X-Content-Type-Options"] == "nosniff", r.request.url

    async def test_no_store_on_authenticated_answers(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        for r in (
            await client.get("/me", headers=tree.h_member),
            await client.get(f"/orgs/{tree.r1.id}", headers=tree.h_member),
            await client.get("/me/sessions", headers=tree.h_member),
            await client.get("/me", headers={"Authorization": "Bearer forged"}),
        ):
            assert r.headers["Cache-Control"] == "no-store", r.request.url

    async def test_no_store_on_token_answers(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        user = await make_user(db)
        r = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": user.phone, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        refreshed = await client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.headers["Cache-Control"] == "no-store"

    async def test_anonymous_public_answers_stay_cacheable(self, client: httpx.AsyncClient) -> None:
        r = await client.get("http://test/healthz")
        assert "no-store" not in r.headers.get("Cache-Control", "")


class TestLocation:
    async def test_forged_host_does_not_come_back_in_location(
        self, app: FastAPI, db: AsyncSession, tree: Tree
    ) -> None:
        # Even where every host is allowed, Location names the public base URL.
        application = sibling(app, allowed_hosts=["*"], public_base_url=PUBLIC)
        async with client_of(application, EVIL) as c:
            r = await c.post("/api/v1/orgs", headers=tree.h_s1, json=regional(tree.s1))
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"{PUBLIC}/api/v1/orgs/{r.json()['id']}"
        assert EVIL not in r.text

    async def test_public_base_url_with_a_path_prefix(self, app: FastAPI, tree: Tree) -> None:
        application = sibling(app, public_base_url=PUBLIC + "/quyu/")
        async with client_of(application, "test") as c:
            r = await c.post("/api/v1/orgs", headers=tree.h_s1, json=regional(tree.s1))
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"{PUBLIC}/quyu/api/v1/orgs/{r.json()['id']}"

    async def test_development_default(self, app: FastAPI, tree: Tree) -> None:
        async with client_of(sibling(app, public_base_url=None), "test") as c:
            r = await c.post("/api/v1/orgs", headers=tree.h_s1, json=regional(tree.s1))
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"http://127.0.0.1:8000/api/v1/orgs/{r.json()['id']}"


class TestAllowedHosts:
    async def test_forged_host_is_refused_before_any_work(
        self, app: FastAPI, db: AsyncSession, tree: Tree
    ) -> None:
        before = await count_orgs(db)
        async with client_of(sibling(app, **PRODUCTION), EVIL) as c:
            r = await c.post("/api/v1/orgs", headers=tree.h_s1, json=regional(tree.s1))
            assert_problem(r, 400, "host_not_allowed")
            assert "Location" not in r.headers
            for host in (f"{EVIL}:443", "quyu.example.org.evil.example", "", "[::1]"):
                r = await c.get("/api/v1/me", headers={**tree.h_member, "Host": host})
                assert_problem(r, 400, "host_not_allowed")
            ok = await c.get("/api/v1/me", headers={**tree.h_member, "Host": "quyu.example.org"})
            assert ok.status_code == 200, ok.text
            with_port = {**tree.h_member, "Host": "QUYU.example.org:443"}
            assert (await c.get("/api/v1/me", headers=with_port)).status_code == 200
        assert await count_orgs(db) == before

    async def test_probes_answer_any_host(self, app: FastAPI) -> None:
        """The kubelet and the image's health check address the pod by its IP."""
        async with client_of(sibling(app, **PRODUCTION), "10.1.2.3:8000") as c:
            assert (await c.get("/healthz")).status_code == 200
            assert_problem(await c.get("/metrics"), 400, "host_not_allowed")

    async def test_development_allows_localhost_only(self, app: FastAPI, tree: Tree) -> None:
        application = sibling(app, allowed_hosts=None)
        for host, status in (
            ("localhost:8000", 200),
            ("127.0.0.1:8000", 200),
            ("[::1]:8000", 200),
            ("app.localhost", 200),
            (EVIL, 400),
            ("test", 400),
        ):
            async with client_of(application, host) as c:
                r = await c.get("/api/v1/me", headers=tree.h_member)
            assert r.status_code == status, (host, r.text)

    @pytest.mark.parametrize(
        ("header", "host"),
        [
            ("example.org", "example.org"),
            ("Example.ORG:8443", "example.org"),
            ("[::1]:8000", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[broken", ""),
        ],
    )
    def test_host_name(self, header: str, host: str) -> None:
        assert host_name(header) == host

    def test_patterns(self) -> None:
        assert host_allowed("a.example.org", ["*.example.org"])
        assert not host_allowed("example.org", ["*.example.org"])
        assert not host_allowed("badexample.org", ["*.example.org"])
        assert host_allowed("anything", ["*"])
        assert not host_allowed("", ["*"])


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Everything production needs, the settings under test aside."""
    for name in ("QUYU_ALLOWED_HOSTS", "QUYU_PUBLIC_BASE_URL", "QUYU_API_DOCS"):
        monkeypatch.delenv(name, raising=False)
    return {
        "env": "production",
        "jwt_secret": secrets.token_urlsafe(48),
        "field_encryption_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "blind_index_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }


class TestProductionSettings:
    def test_host_allow_list_and_public_url_are_required(
        self, production_env: dict[str, Any]
    ) -> None:
        with pytest.raises(ConfigError) as refused:
            Settings(_env_file=None, **production_env)
        assert "QUYU_ALLOWED_HOSTS" in str(refused.value)
        assert "QUYU_PUBLIC_BASE_URL" in str(refused.value)

    def test_starts_with_them(
        self, production_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("QUYU_ALLOWED_HOSTS", "quyu.example.org, *.quyu.example.org")
        monkeypatch.setenv("QUYU_PUBLIC_BASE_URL", "https://quyu.example.org/")
        settings = Settings(_env_file=None, **production_env)
        assert settings.hosts == ("quyu.example.org", "*.quyu.example.org")
        assert settings.base_url == "https://quyu.example.org"
        assert settings.docs_served is False

    @pytest.mark.parametrize("url", ["quyu.example.org", "ftp://x.org", "https://x.org/?a=1"])
    def test_public_url_must_be_absolute_http(self, url: str) -> None:
        with pytest.raises(ValueError, match="public_base_url"):
            Settings(_env_file=None, public_base_url=url)
