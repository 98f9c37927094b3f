"""The demo data `make run` loads: what a front-end developer finds on a fresh clone, through
the API as they would reach it, and loaded twice without duplicating anything."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models.activity import Activity, Signup
from app.models.checkin import Checkin
from app.models.contribution import Contribution
from app.models.organization import Organization
from app.models.user import User
from app.seed import ACTIVITIES, CONTRIBUTIONS, MEMBERS, ORGS, SECRETARIES, member_phone, seed

SECRETARY = next(iter(SECRETARIES))


async def _token(client: httpx.AsyncClient, phone: str) -> dict[str, str]:
    r = await client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": phone,
            "password": get_settings().demo_password,
        },
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _counts(db: AsyncSession) -> dict[str, int]:
    out: dict[str, int] = {}
    for model in (Organization, User, Checkin, Activity, Signup, Contribution):
        stmt = select(func.count()).select_from(model)
        out[model.__name__] = int((await db.execute(stmt)).scalar_one())
    return out


async def _items(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[Any]:
    r = await client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    items: list[Any] = r.json()["items"]
    return items


# `seed()` writes through an engine of its own, which must see the tables committed (and, on
# SQLite, take the write lock).
@pytest.mark.committing
class TestDemoData:
    async def test_loads_once_and_again_adds_nothing(self, db: AsyncSession) -> None:
        first = await seed()
        assert first.organizations == len(ORGS)
        assert first.checkins == len(MEMBERS)
        assert first.activities == len(ACTIVITIES)
        assert first.contributions == len(CONTRIBUTIONS)
        before = await _counts(db)

        again = await seed()
        assert (again.organizations, again.users, again.checkins) == (0, 0, 0)
        assert (again.activities, again.contributions, again.clients) == (0, 0, 0)
        assert await _counts(db) == before
        assert (await seed(only_if_empty=True)).skipped

    async def test_a_fresh_clone_has_something_to_show(self, client: httpx.AsyncClient) -> None:
        await seed()
        secretary = await _token(client, SECRETARY)
        me = (await client.get("/me", headers=secretary)).json()
        org_id = me["offices"][0]["org_id"]

        pending = await _items(client, f"/orgs/{org_id}/checkins?status=pending", secretary)
        assert pending, "the secretary's check-in queue is empty"
        queue = await _items(client, f"/orgs/{org_id}/contributions?status=pending", secretary)
        assert queue, "the secretary's contribution queue is empty"
        assert await _items(client, "/activities", secretary)

        member = await _token(client, member_phone(0))
        listed = await _items(client, "/activities", member)
        assert any(a["my_signup"] for a in listed)
        assert any(a["seats_left"] == 0 for a in listed), "no full activity to try the waitlist"
        assert await _items(client, "/me/contributions", member)
