"""The contract's conventions as they apply to check-ins: OpenAPI, idempotent retries, language."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from openapi_spec_validator import validate
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.checkin import Checkin
from tests.checkins.helpers import count, make_member, submit
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem

OPERATIONS = {
    ("post", "/api/v1/checkins"): "checkins_create",
    ("get", "/api/v1/checkins/{checkin_id}"): "checkins_get",
    ("get", "/api/v1/me/checkins"): "me_checkins_list",
    ("post", "/api/v1/checkins/{checkin_id}/withdraw"): "checkins_withdraw",
    ("post", "/api/v1/checkins/{checkin_id}/leave"): "checkins_leave",
    ("get", "/api/v1/orgs/{org_id}/checkins"): "orgs_checkins_list",
    ("post", "/api/v1/checkins/{checkin_id}/approve"): "checkins_approve",
    ("post", "/api/v1/checkins/{checkin_id}/reject"): "checkins_reject",
    ("post", "/api/v1/checkins/review"): "checkins_review",
    ("get", "/api/v1/orgs/{org_id}/audit-log"): "orgs_audit_log_list",
    ("get", "/api/v1/orgs/{org_id}/members"): "orgs_members_list",
}


class TestOpenApi:
    def test_operations_and_their_problems(self, app: FastAPI) -> None:
        doc = app.openapi()
        validate(doc)
        for (method, path), operation_id in OPERATIONS.items():
            op = doc["paths"][path][method]
            assert op["operationId"] == operation_id
            for code in ("401", "403", "422"):
                content = op["responses"][code]["content"]
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
            if method == "post":
                assert "409" in op["responses"]
        created = doc["paths"]["/api/v1/checkins"]["post"]["responses"]["201"]
        assert "Location" in created["headers"]


class TestConventions:
    async def test_idempotent_retry_replays_the_201(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db)
        retry = {**headers, "Idempotency-Key": "checkin-r1-0001"}
        body = {"org_id": str(tree.r1.id)}
        first = await client.post("/checkins", json=body, headers=retry)
        again = await client.post("/checkins", json=body, headers=retry)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
        assert await count(sessionmaker, Checkin) == 1

    async def test_problems_in_chinese_or_english(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        await submit(client, headers, tree.r1)
        body = {"org_id": str(tree.r1.id)}
        zh = assert_problem(
            await client.post("/checkins", json=body, headers=headers), 409, "checkin_exists"
        )
        assert zh["title"].startswith("你已在该组织登记报到")
        en = assert_problem(
            await client.post("/checkins", json=body, headers={**headers, "Accept-Language": "en"}),
            409,
            "checkin_exists",
        )
        assert en["title"].startswith("You already have")
        assert en["type"] == "urn:quyu:problem:checkin_exists"
