from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.fixtures.factories import login, make_client, make_org, make_user
from tests.fixtures.orgs import Tree


def names(body: dict[str, Any]) -> list[str]:
    return [item["name"] for item in body["items"]]


class TestOrgsList:
    async def test_member_sees_the_whole_directory_in_tree_order(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.get("/orgs", headers=tree.h_member, params={"limit": 100})
        assert r.status_code == 200
        body = r.json()
        assert body["next_cursor"] is None
        ids = [item["id"] for item in body["items"]]
        assert len(ids) == 9
        # A parent comes right before its subtree: its descendants follow it as one block.
        orgs = [tree.d1, tree.s1, tree.r1, tree.e1, tree.b1, tree.r2, tree.d2, tree.s2, tree.r3]
        for org in orgs:
            below = {str(o.id) for o in orgs if o.path.startswith(org.path) and o is not org}
            start = ids.index(str(org.id)) + 1
            assert set(ids[start : start + len(below)]) == below, org.name
        r1 = next(i for i in body["items"] if i["id"] == str(tree.r1.id))
        assert r1["location"] == {"lat": 29.6, "lng": 121.4}
        assert r1["kind"] == "regional"
        assert r1["region_type"] == "migrant_residence"
        assert r1["parent_id"] == str(tree.s1.id)
        assert r1["depth"] == 2
        assert r1["distance_km"] is None

    async def test_filters(self, client: httpx.AsyncClient, tree: Tree) -> None:
        h = tree.h_member
        r = await client.get("/orgs", headers=h, params={"parent_id": str(tree.s1.id)})
        assert sorted(names(r.json())) == ["力邦村党总支", "月湖社区区域党总支"]
        r = await client.get("/orgs", headers=h, params={"kind": "district"})
        assert sorted(names(r.json())) == ["奉化区", "海曙区"]
        r = await client.get("/orgs", headers=h, params={"region_type": "commercial_building"})
        assert names(r.json()) == ["天一商务楼宇党委"]
        r = await client.get("/orgs", headers=h, params={"q": "街道"})
        assert sorted(names(r.json())) == ["西坞街道", "鼓楼街道"]

    async def test_q_escapes_like_wildcards_and_ignores_case(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        await make_org(db, tree.r1, name="Alpha 100% 支部", kind="enterprise")
        await make_org(db, tree.r1, name="Beta_支部", kind="enterprise")
        h = tree.h_member
        assert names((await client.get("/orgs", headers=h, params={"q": "%"})).json()) == [
            "Alpha 100% 支部"
        ]
        assert names((await client.get("/orgs", headers=h, params={"q": "_"})).json()) == [
            "Beta_支部"
        ]
        assert names((await client.get("/orgs", headers=h, params={"q": "ALPHA"})).json()) == [
            "Alpha 100% 支部"
        ]

    async def test_cursor_walks_every_org_once(self, client: httpx.AsyncClient, tree: Tree) -> None:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 4}  # 9 orgs: 4, 4, then 1
            if cursor:
                params["cursor"] = cursor
            r = await client.get("/orgs", headers=tree.h_member, params=params)
            assert r.status_code == 200
            seen += [i["id"] for i in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            pages += 1
            if cursor is None:
                break
        assert pages == 3
        assert len(seen) == len(set(seen)) == 9

    async def test_near_sorts_by_distance_within_the_radius(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        # About 1.1 km and 5.6 km north of r1; r2 is ~30 km away.
        await make_org(db, tree.r1, name="近", kind="building", lat=29.61, lng=121.40)
        await make_org(db, tree.r1, name="远", kind="building", lat=29.65, lng=121.40)
        r = await client.get(
            "/orgs", headers=tree.h_member, params={"near": "29.60,121.40", "radius_km": 10}
        )
        assert r.status_code == 200
        body = r.json()
        assert names(body) == ["力邦村党总支", "近", "远"]
        assert body["next_cursor"] is None
        distances = [i["distance_km"] for i in body["items"]]
        assert distances[0] == 0
        assert 1.0 < distances[1] < 1.2
        assert 5.4 < distances[2] < 5.7
        r = await client.get(
            "/orgs",
            headers=tree.h_member,
            params={"near": "29.60,121.40", "radius_km": 50, "limit": 4},
        )
        assert names(r.json()) == ["力邦村党总支", "近", "远", "天一商务楼宇党委"]
        r = await client.get(
            "/orgs",
            headers=tree.h_member,
            params={"near": "29.60,121.40", "radius_km": 3, "kind": "building"},
        )
        assert names(r.json()) == ["近"]

    async def test_bad_query_is_422(self, client: httpx.AsyncClient, tree: Tree) -> None:
        for params in (
            {"near": "91,121"},
            {"near": "29,181"},
            {"near": "29"},
            {"near": "abc,def"},
            {"near": "nan,1"},
            {"radius_km": "5"},
            {"near": "29,121", "radius_km": "51"},
            {"near": "29,121", "cursor": "abc"},
            {"kind": "planet"},
            {"limit": "101"},
            {"cursor": "not-a-cursor"},
            {"parent_id": "12"},
        ):
            r = await client.get("/orgs", headers=tree.h_member, params=params)
            assert r.status_code == 422, params
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] in ("validation_error", "invalid_cursor")
            if r.json()["code"] == "validation_error":
                assert r.json()["errors"], params

    async def test_city_client_needs_orgs_read(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, h_ok = await make_client(db, scopes="orgs:read")
        r = await client.get("/orgs", headers=h_ok, params={"limit": 100})
        assert r.status_code == 200
        assert len(r.json()["items"]) == 9
        _, h_no = await make_client(db, scopes="stats:read")
        r = await client.get("/orgs", headers=h_no)
        assert r.status_code == 403
        assert r.json()["code"] == "scope_missing"

    async def test_bound_city_client_reads_its_subtree(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, h = await make_client(db, scopes="orgs:read", org=tree.d2)
        r = await client.get("/orgs", headers=h, params={"limit": 100})
        assert sorted(names(r.json())) == ["天一商务楼宇党委", "海曙区", "鼓楼街道"]

    async def test_anonymous_is_401(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get("/orgs")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, count_queries: Any
    ) -> None:
        district = await make_org(db, kind="district")
        user = await make_user(db)
        h = await login(db, user)

        async def run() -> int:
            with count_queries() as q:
                r = await client.get("/orgs", headers=h, params={"limit": 100})
            assert r.status_code == 200
            return int(q.count)

        await make_org(db, district, kind="street")
        small = await run()
        for _ in range(25):
            await make_org(db, district, kind="street", lat=29.6, lng=121.4)
        assert await run() == small
        with count_queries() as q:
            r = await client.get("/orgs", headers=h, params={"near": "29.6,121.4"})
        assert len(r.json()["items"]) == 20
        assert q.count == small


class TestOrgsGet:
    async def test_one_org_with_parent_summary(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get(f"/orgs/{tree.r1.id}", headers=tree.h_member)
        assert r.status_code == 200
        body = r.json()
        assert body["id"] == str(tree.r1.id)
        assert body["kind"] == "regional"
        assert body["level"] == "general_branch"
        assert body["region_type"] == "migrant_residence"
        assert body["founding_form"] is None
        assert body["address"] == "奉化区西坞街道力邦村"
        assert body["location"] == {"lat": 29.6, "lng": 121.4}
        assert body["parent_id"] == str(tree.s1.id)
        assert body["parent"] == {"id": str(tree.s1.id), "name": "西坞街道"}
        assert "path" not in body
        assert r.headers["etag"]
        again = await client.get(
            f"/orgs/{tree.r1.id}", headers={**tree.h_member, "If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304

    async def test_root_has_no_parent(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get(f"/orgs/{tree.d1.id}", headers=tree.h_member)
        assert r.json()["parent"] is None
        assert r.json()["parent_id"] is None
        assert r.json()["location"] is None

    async def test_missing_is_404_problem(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get(f"/orgs/{uuid.uuid4()}", headers=tree.h_member)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "not_found"

    async def test_malformed_id_is_422(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get("/orgs/123", headers=tree.h_member)
        assert r.status_code == 422
        assert r.json()["code"] == "validation_error"
        assert r.json()["errors"][0]["field"] == "org_id"

    async def test_city_clients(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, h_city = await make_client(db, scopes="orgs:read")
        assert (await client.get(f"/orgs/{tree.r3.id}", headers=h_city)).status_code == 200
        _, h_bound = await make_client(db, scopes="orgs:read", org=tree.d1)
        assert (await client.get(f"/orgs/{tree.r1.id}", headers=h_bound)).status_code == 200
        r = await client.get(f"/orgs/{tree.r3.id}", headers=h_bound)
        assert r.status_code == 403
        _, h_none = await make_client(db, scopes="stats:read")
        r = await client.get(f"/orgs/{tree.r1.id}", headers=h_none)
        assert r.status_code == 403
        assert r.json()["code"] == "scope_missing"

    async def test_english_problem(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get(
            f"/orgs/{uuid.uuid4()}", headers={**tree.h_member, "Accept-Language": "en"}
        )
        assert r.json()["title"] == "Not found"
