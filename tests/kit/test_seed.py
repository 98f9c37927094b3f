"""The demo data `make run` loads: what a front-end developer finds on a fresh clone, through
the API as they would reach it, and loaded twice without duplicating anything."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.demo.loader import seed
from app.demo.people import (
    CONTRIBUTIONS,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    MEMBERS,
    SECRETARIES,
    member_phone,
)
from app.demo.places import ACTIVITIES, ORGS
from app.identity.api_clients import create_client
from app.models.activity import Activity, Signup, SignupStatus
from app.models.checkin import Checkin
from app.models.contribution import Contribution
from app.models.organization import Organization
from app.models.user import User

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
        first = await seed(get_settings())
        assert first.organizations == len(ORGS)
        assert first.checkins == len(MEMBERS)
        assert first.activities == len(ACTIVITIES)
        assert first.contributions == len(CONTRIBUTIONS)
        before = await _counts(db)

        again = await seed(get_settings())
        assert (again.organizations, again.users, again.checkins) == (0, 0, 0)
        assert (again.activities, again.contributions, again.clients) == (0, 0, 0)
        assert await _counts(db) == before
        assert (await seed(get_settings(), only_if_empty=True)).skipped

    async def test_a_fresh_clone_has_something_to_show(self, client: httpx.AsyncClient) -> None:
        await seed(get_settings())
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

    async def test_derived_fields_follow_the_domain_rules(self, db: AsyncSession) -> None:
        await seed(get_settings())
        # Floating: every member recorded elsewhere, and nobody recorded inside the district
        # checked in to (all the demo's in-tree records lie in the target's district).
        rows = await db.execute(
            select(User.phone, Checkin.floating).join(Checkin, Checkin.user_id == User.id)
        )
        floating = dict(rows.all())
        assert floating == {
            member_phone(i): spec.record_org is None for i, spec in enumerate(MEMBERS)
        }
        # Paths: each organization's path is its parent's followed by its own id.
        orgs = {o.id: o for o in (await db.execute(select(Organization))).scalars()}
        for org in orgs.values():
            parent_path = orgs[org.parent_id].path if org.parent_id else "/"
            assert org.path == f"{parent_path}{org.id.hex}/"
            assert org.depth == org.path.count("/") - 2
        # Counters: what the sign-ups say.
        for activity in (await db.execute(select(Activity))).scalars():
            confirmed = await db.scalar(
                select(func.count()).where(
                    Signup.activity_id == activity.id,
                    Signup.status == SignupStatus.confirmed.value,
                )
            )
            assert activity.confirmed_count == confirmed
            assert activity.waitlist_count == 0


@pytest.mark.committing
class TestCreateClient:
    async def test_the_secret_signs_in_once_made_and_a_name_is_taken_once(
        self, client: httpx.AsyncClient
    ) -> None:
        secret = await create_client(get_settings(), "city-roster", "stats:read orgs:read", None)
        r = await client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "city-roster",
                "client_secret": secret,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "orgs:read stats:read"
        with pytest.raises(IntegrityError):
            await create_client(get_settings(), "city-roster", "orgs:read", None)

    async def test_the_demo_client_signs_in(self, client: httpx.AsyncClient) -> None:
        await seed(get_settings())
        r = await client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "orgs:read stats:read"
