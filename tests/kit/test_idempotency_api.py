"""Idempotency-Key on the real API: authentication comes first, answers are bound to the
session that made them, anonymous registrations never collide, and the OpenAPI document says
where the header is honoured and what it must look like."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.idempotency import IdempotentRoute
from app.models.auth import UserSession
from app.models.kit import IdempotencyRecord
from app.models.organization import Organization
from app.models.user import User
from tests.fixtures.factories import next_phone
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


def _registration(name: str = "幂等") -> dict[str, str]:
    return {"phone": next_phone(), "password": "long-enough-1", "name": name}


async def _users(db: AsyncSession, phone: str) -> int:
    return (await db.execute(select(func.count(User.id)).where(User.phone == phone))).scalar_one()


def _org(parent: Organization) -> dict[str, Any]:
    return {
        "name": "幂等区域党委",
        "kind": "regional",
        "region_type": "industrial_park",
        "parent_id": str(parent.id),
    }


class TestAnonymousRegistration:
    async def test_retry_replays_and_registers_once(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        body = _registration()
        headers = {"Idempotency-Key": "register-1"}
        first = await client.post("/auth/register", json=body, headers=headers)
        again = await client.post("/auth/register", json=body, headers=headers)
        assert first.status_code == again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content
        assert await _users(db, body["phone"]) == 1

    async def test_two_people_with_the_same_key_both_register(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        headers = {"Idempotency-Key": "1"}
        alice, bob = _registration("甲"), _registration("乙")
        a = await client.post("/auth/register", json=alice, headers=headers)
        b = await client.post("/auth/register", json=bob, headers=headers)
        assert a.status_code == b.status_code == 201, b.text
        assert "Idempotent-Replayed" not in b.headers
        assert b.json()["phone"] == bob["phone"]
        assert await _users(db, alice["phone"]) == await _users(db, bob["phone"]) == 1

    async def test_a_refused_registration_keeps_nothing(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        body = _registration()
        assert (await client.post("/auth/register", json=body)).status_code == 201
        headers = {"Idempotency-Key": "register-taken"}
        r = await client.post("/auth/register", json=body, headers=headers)
        assert_problem(r, 409, "phone_taken")
        count = select(func.count(IdempotencyRecord.id)).where(
            IdempotencyRecord.key == "register-taken"
        )
        assert (await db.execute(count)).scalar_one() == 0

    async def test_the_token_endpoint_keeps_nothing(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        body = _registration()
        await client.post("/auth/register", json=body)
        form = {"grant_type": "password", "username": body["phone"], "password": body["password"]}
        headers = {"Idempotency-Key": "token-1"}
        one = await client.post("/auth/token", data=form, headers=headers)
        two = await client.post("/auth/token", data=form, headers=headers)
        assert one.status_code == two.status_code == 200
        assert one.json()["refresh_token"] != two.json()["refresh_token"]
        assert (await db.execute(select(func.count(IdempotencyRecord.id)))).scalar_one() == 0


class TestAuthenticatedFirst:
    async def test_unauthenticated_gets_401_not_an_idempotency_answer(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        # An anonymous answer under the key exists, and so does an officer's.
        await client.post("/auth/register", json=_registration(), headers={"Idempotency-Key": "k"})
        officer = {**tree.h_s1, "Idempotency-Key": "k"}
        assert (await client.post("/orgs", json=_org(tree.s1), headers=officer)).status_code == 201
        for body in (_org(tree.s1), {"name": "x"}):
            r = await client.post("/orgs", json=body, headers={"Idempotency-Key": "k"})
            assert_problem(r, 401, "unauthorized")
        r = await client.post("/orgs", json=_org(tree.s1), headers={"Idempotency-Key": "a b"})
        assert_problem(r, 401, "unauthorized")

    async def test_a_revoked_session_no_longer_replays(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        headers = {**tree.h_s1, "Idempotency-Key": "org-session"}
        first = await client.post("/orgs", json=_org(tree.s1), headers=headers)
        assert first.status_code == 201
        again = await client.post("/orgs", json=_org(tree.s1), headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        await db.execute(
            update(UserSession)
            .where(UserSession.user_id == tree.s1_officer.id)
            .values(revoked_at=clock.now())
        )
        await db.commit()
        r = await client.post("/orgs", json=_org(tree.s1), headers=headers)
        assert_problem(r, 401, "token_invalid")

    async def test_another_officer_same_key_is_another_key(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        before = (await db.execute(select(func.count(Organization.id)))).scalar_one()
        for headers in (tree.h_s1, tree.h_s1_worker):
            r = await client.post(
                "/orgs", json=_org(tree.s1), headers={**headers, "Idempotency-Key": "same"}
            )
            assert r.status_code == 201, r.text
            assert "Idempotent-Replayed" not in r.headers
        after = (await db.execute(select(func.count(Organization.id)))).scalar_one()
        assert after == before + 2

    async def test_replay_counted_under_the_route_template(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        labels = {"method": "POST", "route": "/api/v1/orgs", "outcome": "replayed"}
        before = REGISTRY.get_sample_value("quyu_idempotency_total", labels) or 0.0
        headers = {**tree.h_s1, "Idempotency-Key": f"metrics-{uuid.uuid4()}"}
        for _ in range(2):
            await client.post("/orgs", json=_org(tree.s1), headers=headers)
        assert REGISTRY.get_sample_value("quyu_idempotency_total", labels) == before + 1


class TestOpenAPI:
    async def test_header_documented_where_honoured_with_its_pattern(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("http://test/openapi.json")).json()
        honoured: dict[str, dict[str, Any]] = {}
        for path, item in document["paths"].items():
            for method, op in item.items():
                for param in op.get("parameters", []):
                    if param["name"] == "Idempotency-Key":
                        assert method == "post", (path, method)
                        honoured[path] = param
        assert "/api/v1/auth/register" in honoured
        assert "/api/v1/orgs" in honoured
        assert "/api/v1/activities/{activity_id}/signup" in honoured
        for absent in (
            "/api/v1/auth/token",
            "/api/v1/auth/wechat",
            "/api/v1/auth/wechat/bind",
            "/api/v1/contributions/{record_id}/attachments",
        ):
            assert absent not in honoured
        for path, param in honoured.items():
            schema = param["schema"]
            assert schema == {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!-~]{1,255}$",
            }, path
            pattern = re.compile(schema["pattern"])
            assert pattern.match("k-1") and not pattern.match("a b") and not pattern.match("é")
            op = document["paths"][path]["post"]
            assert op.get("security") or path == "/api/v1/auth/register", path
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert all("Idempotent-Replayed" in op["responses"][s]["headers"] for s in ok)

    def test_every_api_post_route_is_idempotent_aware(self, app: FastAPI) -> None:
        def walk(routes: list[Any]) -> list[APIRoute]:
            found: list[APIRoute] = []
            for route in routes:
                if isinstance(route, APIRoute):
                    found.append(route)
                inner = getattr(route, "original_router", None)
                if inner is not None:
                    found.extend(walk(inner.routes))
            return found

        posts = [r for r in walk(app.routes) if "POST" in (r.methods or set())]
        assert len(posts) > 20
        assert all(isinstance(r, IdempotentRoute) for r in posts), [
            r.path for r in posts if not isinstance(r, IdempotentRoute)
        ]


@pytest.mark.postgres_only
@pytest.mark.committing
class TestConcurrentRegistrations:
    async def test_duplicates_in_flight_all_answer_the_one_registration(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        """The losers fail on the taken phone (or on the key) once the winner commits, and
        answer the winner's answer instead of 409 `phone_taken`."""
        body = _registration()
        headers = {"Idempotency-Key": "register-burst"}
        answers = await asyncio.gather(
            *(client.post("/auth/register", json=body, headers=headers) for _ in range(10))
        )
        assert [r.status_code for r in answers] == [201] * 10, [r.text for r in answers]
        assert len({r.content for r in answers}) == 1
        assert sum("Idempotent-Replayed" not in r.headers for r in answers) == 1
        assert await _users(db, body["phone"]) == 1
