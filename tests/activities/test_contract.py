"""The activities part of the contract: operations, their problems, and problem codes in
both languages."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import CATALOG
from tests.activities.conftest import World, create_activity, member_of

OPERATIONS = {
    ("post", "/api/v1/activities"): "activities_create",
    ("get", "/api/v1/activities"): "activities_list",
    ("patch", "/api/v1/activities/{activity_id}"): "activities_update",
    ("get", "/api/v1/activities/{activity_id}"): "activities_get",
    ("post", "/api/v1/activities/{activity_id}/publish"): "activities_publish",
    ("post", "/api/v1/activities/{activity_id}/cancel"): "activities_cancel",
    ("post", "/api/v1/activities/{activity_id}/complete"): "activities_complete",
    ("post", "/api/v1/activities/{activity_id}/signup"): "activities_signup",
    ("delete", "/api/v1/activities/{activity_id}/signup"): "activities_signup_cancel",
    ("get", "/api/v1/me/signups"): "me_signups_list",
    ("get", "/api/v1/activities/{activity_id}/signups"): "activities_signups_list",
    ("get", "/api/v1/activities/{activity_id}/attendance-code"): "activities_attendance_code",
    ("post", "/api/v1/activities/{activity_id}/attendance"): "activities_attendance_create",
    (
        "put",
        "/api/v1/activities/{activity_id}/attendance/{user_id}",
    ): "activities_attendance_mark",
}

CODES = [
    "already_signed_up",
    "signup_closed",
    "not_registered",
    "capacity_below_confirmed",
    "activity_started",
    "activity_not_started",
    "not_confirmed",
    "attendance_closed",
    "attendance_code_invalid",
    "location_inaccurate",
    "outside_geofence",
    "scan_too_old",
    "attendance_decided",
]


class TestContract:
    async def test_operations_and_their_problems(self, client: httpx.AsyncClient) -> None:
        doc = (await client.get("http://test/openapi.json")).json()
        for (method, path), operation_id in OPERATIONS.items():
            op = doc["paths"][path][method]
            assert op["operationId"] == operation_id
            assert "activities" in op["tags"]
            errors = [s for s in op["responses"] if s[0] == "4"]
            assert {"401", "403"} <= set(errors), (method, path)
            for status in errors:
                assert "application/problem+json" in op["responses"][status]["content"]
        assert "201" in doc["paths"]["/api/v1/activities/{activity_id}/signup"]["post"]["responses"]

    def test_codes_are_registered_in_both_languages(self) -> None:
        for code in CODES:
            status, zh, en = CATALOG[code]
            assert status in (403, 409, 422)
            assert zh and en and zh != en

    async def test_problem_in_english_on_request(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world)
        _, headers = await member_of(db, world.outside)
        r = await client.post(
            f"/activities/{a['id']}/signup", headers=headers | {"Accept-Language": "en"}
        )
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "not_registered"
        assert body["type"] == "urn:quyu:problem:not_registered"
        assert body["title"] == CATALOG["not_registered"][2]
        r = await client.post(f"/activities/{a['id']}/signup", headers=headers)
        assert r.json()["title"] == CATALOG["not_registered"][1]
