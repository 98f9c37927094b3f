"""The OpenAPI document declares the constraints the server enforces, so that a request valid
by the document is not refused for its shape (tests/kit/test_fuzz.py checks every operation;
these are the cases a fuzzer found, as regressions)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.geo import NEAR_PATTERN
from app.core.pagination import CURSOR_PATTERN, encode_cursor
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


def parameter(app: FastAPI, path: str, method: str, name: str) -> dict[str, Any]:
    op = app.openapi()["paths"][path][method]
    (found,) = [p for p in op["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    # `str | None`: the string branch, with what applies to the whole (e.g. a pattern).
    branch = schema["anyOf"][0] if "anyOf" in schema else {}
    return {**{k: v for k, v in schema.items() if k != "anyOf"}, **branch}


class TestNear:
    @pytest.mark.parametrize("path", ["/api/v1/orgs", "/api/v1/activities"])
    def test_declared(self, app: FastAPI, path: str) -> None:
        assert parameter(app, path, "get", "near")["pattern"] == NEAR_PATTERN

    @pytest.mark.parametrize(
        "near", ["90,-180", "-90,180", "0,0", "29.6,121.4", "-0.000001,179.9999", "90.000,180.0"]
    )
    async def test_valid_by_the_pattern_is_accepted(
        self, client: httpx.AsyncClient, tree: Tree, near: str
    ) -> None:
        assert re.fullmatch(NEAR_PATTERN, near)
        for path in ("/orgs", "/activities"):
            r = await client.get(path, headers=tree.h_member, params={"near": near})
            assert r.status_code == 200, (path, near, r.text)

    @pytest.mark.parametrize(
        "near", ["90.1,0", "0,180.5", "1e1,2", "nan,1", " 1,2", "1,2,3", "+1,2", "1.,2"]
    )
    async def test_invalid_by_the_pattern_is_refused(
        self, client: httpx.AsyncClient, tree: Tree, near: str
    ) -> None:
        assert not re.fullmatch(NEAR_PATTERN, near)
        r = await client.get("/orgs", headers=tree.h_member, params={"near": near})
        assert_problem(r, 422, "validation_error")


class TestCursor:
    def test_declared_and_what_the_server_writes(self, app: FastAPI) -> None:
        assert parameter(app, "/api/v1/orgs", "get", "cursor")["pattern"] == CURSOR_PATTERN
        assert re.fullmatch(CURSOR_PATTERN, encode_cursor(["a/b", 1, "ü" * 40]))

    async def test_a_cursor_with_near_is_the_cursors_problem(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        params = {"near": "29.6,121.4", "cursor": encode_cursor(["x"])}
        r = await client.get("/orgs", headers=tree.h_member, params=params)
        assert_problem(r, 422, "invalid_cursor")


class TestIdempotencyKey:
    def test_declared(self, app: FastAPI) -> None:
        schema = parameter(app, "/api/v1/checkins", "post", "Idempotency-Key")
        assert schema["minLength"] == 1 and schema["maxLength"] == 255
        assert re.fullmatch(schema["pattern"], "abc-!~")
        assert not re.fullmatch(schema["pattern"], "a b")
        assert not re.fullmatch(schema["pattern"], "ключ")

    async def test_a_key_valid_by_the_document_is_accepted(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        headers = {**tree.h_member, "Idempotency-Key": "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"}
        r = await client.post("/auth/logout", headers=headers, json={"refresh_token": "x"})
        assert r.status_code == 204, r.text


class TestShadowedPaths:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/checkins/review"),
            ("GET", "/contributions/review"),
            ("PATCH", "/contributions/review"),
        ],
    )
    async def test_other_methods_on_review_are_405(
        self, client: httpx.AsyncClient, tree: Tree, method: str, path: str
    ) -> None:
        r = await client.request(method, path, headers=tree.h_s1, json={})
        assert_problem(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "POST"


class TestBodies:
    def test_rules_are_declared(self, app: FastAPI) -> None:
        schemas = app.openapi()["components"]["schemas"]
        assert schemas["ContributionCreate"]["properties"]["hours"]["exclusiveMinimum"] == 0
        assert schemas["ContributionCreate"]["properties"]["hours"]["multipleOf"] == 0.5
        kind = schemas["OrgUpdate"]["properties"]["kind"]
        assert "anyOf" not in kind and "default" not in kind
        assert schemas["MeUpdate"]["allOf"][0]["not"]["required"] == [
            "record_org_id",
            "record_org_name",
        ]
        assert schemas["ContributionReview"]["allOf"][0]["then"]["required"] == ["comment"]
        assert schemas["AttendanceCreate"]["anyOf"]

    async def test_null_for_a_field_that_refuses_it_is_invalid_by_the_document(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.patch(f"/orgs/{tree.r1.id}", headers=tree.h_s1, json={"kind": None})
        assert_problem(r, 422, "validation_error")
