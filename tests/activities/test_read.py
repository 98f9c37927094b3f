"""What members see: the activity list (visibility, filters, distance, counters, paging)
and one activity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.activities.conftest import (
    FakeClock,
    Headers,
    QueryCounterFactory,
    World,
    accept_co_host,
    create_activity,
    member_of,
)
from tests.fixtures.factories import login, make_officer, make_org


async def _listed(client: httpx.AsyncClient, headers: Headers, **params: Any) -> list[str]:
    r = await client.get("/activities", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


class TestList:
    @pytest.mark.parametrize(
        ("where", "sees"),
        [
            ("host", {"org", "region", "public"}),
            ("child", {"org", "region", "public"}),
            ("cohost", {"org", "region", "public"}),
            ("street", {"region", "public"}),  # above the host, same district
            ("outside", {"public"}),  # another district
            ("nowhere", {"public"}),
            ("pending", {"public"}),  # checked in at the host, not yet approved
            ("host_officer", {"org", "region", "public"}),  # runs the host, no check-in
            ("outsider_officer", {"public"}),  # runs an organization in another district
        ],
    )
    async def test_visibility(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        where: str,
        sees: set[str],
    ) -> None:
        ids = {}
        for visibility in ("org", "region", "public"):
            a = await create_activity(
                client, world, visibility=visibility, co_host_org_ids=[str(world.cohost.id)]
            )
            await accept_co_host(client, world, a["id"])
            ids[a["id"]] = visibility
        if where == "host_officer":
            headers = world.officer_headers
        elif where == "outsider_officer":
            headers = world.outsider_headers
        elif where == "pending":
            _, headers = await member_of(db, world.host, status="pending")
        elif where == "nowhere":
            _, headers = await member_of(db, None)
        else:
            _, headers = await member_of(db, getattr(world, where))
        listed = await _listed(client, headers)
        assert {ids[i] for i in listed} == sees
        # GET of one follows the same rule.
        for activity_id, visibility in ids.items():
            r = await client.get(f"/activities/{activity_id}", headers=headers)
            assert r.status_code == (200 if visibility in sees else 404)

    async def test_only_published_and_not_ended(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        draft = await create_activity(client, world, publish=False)
        cancelled = await create_activity(client, world)
        await client.post(
            f"/activities/{cancelled['id']}/cancel",
            json={"reason": "x"},
            headers=world.officer_headers,
        )
        start = fake_clock() + timedelta(hours=1)
        soon = await create_activity(
            client,
            world,
            starts_at=start.isoformat(),
            ends_at=(start + timedelta(hours=1)).isoformat(),
        )
        later = await create_activity(client, world)
        _, headers = await member_of(db, world.host)
        assert await _listed(client, headers) == [soon["id"], later["id"]]
        assert draft["id"] not in await _listed(client, headers)
        fake_clock.advance(hours=2, minutes=30)  # `soon` has ended, `later` is under way
        assert await _listed(client, headers) == [later["id"]]

    async def test_filters(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, fake_clock: FakeClock
    ) -> None:
        tz = ZoneInfo("Asia/Shanghai")
        base = (fake_clock() + timedelta(days=2)).astimezone(tz).replace(hour=9, minute=0, second=0)

        def at(days: int) -> dict[str, Any]:
            s = base + timedelta(days=days)
            return {"starts_at": s.isoformat(), "ends_at": (s + timedelta(hours=2)).isoformat()}

        study = await create_activity(client, world, category="study", **at(0))
        volunteer = await create_activity(client, world, category="volunteer", **at(1))
        co_hosted = await create_activity(
            client, world, co_host_org_ids=[str(world.cohost.id)], **at(2)
        )
        await accept_co_host(client, world, co_hosted["id"])
        _, headers = await member_of(db, world.host)
        assert await _listed(client, headers, category="volunteer") == [volunteer["id"]]
        assert await _listed(client, headers, org_id=str(world.cohost.id)) == [co_hosted["id"]]
        assert await _listed(client, headers, org_id=str(world.host.id)) == [
            study["id"],
            volunteer["id"],
            co_hosted["id"],
        ]
        # Dates without an offset are read in Asia/Shanghai.
        day1 = (base + timedelta(days=1)).date().isoformat()
        day2 = (base + timedelta(days=2)).date().isoformat()
        assert await _listed(client, headers, **{"from": day1, "to": day2}) == [volunteer["id"]]
        assert await _listed(client, headers, **{"from": day2}) == [co_hosted["id"]]
        r = await client.get("/activities", headers=headers, params={"category": "party"})
        assert r.status_code == 422

    async def test_near_sorts_by_distance_within_the_radius(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        def place(lat: float, lng: float) -> dict[str, Any]:
            return {"location": {"name": "站点", "lat": lat, "lng": lng, "radius_m": 100}}

        far = await create_activity(client, world, **place(29.8683 + 0.05, 121.5440))  # ~5.6 km
        near = await create_activity(client, world, **place(29.8683, 121.5440 + 0.005))  # ~480 m
        away = await create_activity(client, world, **place(30.5, 121.5440))  # ~70 km
        _, headers = await member_of(db, world.host)
        r = await client.get(
            "/activities", headers=headers, params={"near": "29.8683,121.5440", "radius_km": 10}
        )
        items = r.json()["items"]
        assert [i["id"] for i in items] == [near["id"], far["id"]]
        assert 470 < items[0]["distance_m"] < 490
        assert 5500 < items[1]["distance_m"] < 5600
        assert away["id"] not in [i["id"] for i in items]
        # Paged by distance too.
        r = await client.get(
            "/activities",
            headers=headers,
            params={"near": "29.8683,121.5440", "radius_km": 100, "limit": 2},
        )
        first = r.json()
        assert [i["id"] for i in first["items"]] == [near["id"], far["id"]]
        r = await client.get(
            "/activities",
            headers=headers,
            params={
                "near": "29.8683,121.5440",
                "radius_km": 100,
                "limit": 2,
                "cursor": first["next_cursor"],
            },
        )
        assert [i["id"] for i in r.json()["items"]] == [away["id"]]
        assert r.json()["next_cursor"] is None

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"near": "29.8"}, "near"),
            ({"near": "a,b"}, "near"),
            ({"near": "91,121"}, "near"),
            ({"radius_km": 5}, "radius_km"),  # a radius without a point
        ],
    )
    async def test_bad_near_is_422(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        params: dict[str, Any],
        field: str,
    ) -> None:
        _, headers = await member_of(db, world.host)
        r = await client.get("/activities", headers=headers, params=params)
        assert r.status_code == 422
        assert r.json()["code"] == "validation_error"
        assert [e["field"] for e in r.json()["errors"]] == [field]

    async def test_counters_and_my_signup(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, capacity=1)
        _, first = await member_of(db, world.host)
        _, second = await member_of(db, world.host)
        _, third = await member_of(db, world.host)
        _, idle = await member_of(db, world.host)
        for h in (first, second, third):
            await client.post(f"/activities/{a['id']}/signup", headers=h)

        async def item(headers: Headers) -> dict[str, Any]:
            r = await client.get("/activities", headers=headers)
            result: dict[str, Any] = r.json()["items"][0]
            return result

        mine = await item(third)
        assert mine["seats_left"] == 0
        assert mine["waitlist_count"] == 2
        assert mine["my_signup"]["status"] == "waitlisted"
        assert mine["my_signup"]["waitlist_position"] == 2
        assert (await item(first))["my_signup"]["status"] == "confirmed"
        assert (await item(idle))["my_signup"] is None

    async def test_pages_with_a_fixed_number_of_queries(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        world: World,
        count_queries: QueryCounterFactory,
        fake_clock: FakeClock,
    ) -> None:
        _, headers = await member_of(db, world.host)
        created = [await create_activity(client, world, capacity=1)]
        await client.post(f"/activities/{created[0]['id']}/signup", headers=headers)
        with count_queries() as one:
            r = await client.get("/activities", headers=headers)
        assert len(r.json()["items"]) == 1
        for i in range(6):
            fake_clock.advance(minutes=1)  # each starts a minute after the previous one
            created.append(
                await create_activity(
                    client, world, visibility="public" if i % 2 else "org", capacity=1
                )
            )
            await client.post(f"/activities/{created[-1]['id']}/signup", headers=headers)
        with count_queries() as many:
            r = await client.get("/activities", headers=headers)
        assert len(r.json()["items"]) == 7
        assert many.count == one.count == 3  # the caller, their organizations, the page
        # Through every page with a cursor, in start order, nothing twice.
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/activities", headers=headers, params=params)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [a["id"] for a in created]

    async def test_bad_cursor_is_422(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        _, headers = await member_of(db, world.host)
        r = await client.get("/activities", headers=headers, params={"cursor": "garbage"})
        assert r.status_code == 422
        assert r.json()["code"] == "invalid_cursor"


class TestGet:
    async def test_member_sees_details_and_own_signup(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, co_host_org_ids=[str(world.cohost.id)])
        await accept_co_host(client, world, a["id"])
        _, headers = await member_of(db, world.cohost)
        await client.post(f"/activities/{a['id']}/signup", headers=headers)
        r = await client.get(f"/activities/{a['id']}", headers=headers)
        assert r.status_code == 200
        body = r.json()
        assert body["description"] == "地点在党员服务中心二楼"
        assert body["co_host_org_ids"] == [str(world.cohost.id)]
        assert body["my_signup"]["status"] == "confirmed"
        assert body["seats_left"] == 9
        assert "ETag" in r.headers
        again = await client.get(
            f"/activities/{a['id']}", headers=headers | {"If-None-Match": r.headers["ETag"]}
        )
        assert again.status_code == 304

    async def test_draft_is_hidden_from_members_not_from_officers(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, publish=False, visibility="public")
        _, headers = await member_of(db, world.host)
        assert (await client.get(f"/activities/{a['id']}", headers=headers)).status_code == 404
        assert (
            await client.get(f"/activities/{a['id']}", headers=world.outsider_headers)
        ).status_code == 404
        r = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
        assert r.status_code == 200
        assert r.json()["status"] == "draft"

    async def test_officer_above_sees_an_org_activity(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world)
        officer = await make_officer(db, world.street)
        r = await client.get(f"/activities/{a['id']}", headers=await login(db, officer))
        assert r.status_code == 200

    async def test_region_reaches_a_new_district_branch(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, visibility="region")
        park = await make_org(db, world.district, name="工业园区", kind="park")
        _, headers = await member_of(db, park)
        assert (await client.get(f"/activities/{a['id']}", headers=headers)).status_code == 200
