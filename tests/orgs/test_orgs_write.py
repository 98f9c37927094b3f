from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.kit import AuditLog, OutboxEvent
from app.models.organization import Organization
from tests.fixtures.factories import make_client, make_org
from tests.fixtures.orgs import Tree
from tests.orgs.conftest import count_orgs, fresh


def assert_422(r: httpx.Response, code: str = "validation_error") -> list[dict[str, str]]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code
    assert body["errors"]
    errors: list[dict[str, str]] = body["errors"]
    return errors


async def count(db: AsyncSession, model: Any) -> int:
    return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


def regional(parent: Organization, **extra: Any) -> dict[str, Any]:
    return {
        "name": "新区域党委",
        "kind": "regional",
        "region_type": "industrial_park",
        "parent_id": str(parent.id),
        **extra,
    }


class TestOrgsCreate:
    async def test_officer_of_the_parent_creates(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        body = regional(
            tree.s1,
            name="  工业园区党委  ",
            level="committee",
            founding_form="trade",
            address="西坞工业园",
            location={"lat": 29.5, "lng": 121.3},
        )
        r = await client.post("/orgs", headers=tree.h_s1, json=body)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["name"] == "工业园区党委"
        assert out["parent"] == {"id": str(tree.s1.id), "name": "西坞街道"}
        assert out["location"] == {"lat": 29.5, "lng": 121.3}
        assert out["depth"] == 2
        assert r.headers["location"].endswith(f"/api/v1/orgs/{out['id']}")
        created = await db.get(Organization, uuid.UUID(out["id"]))
        assert created is not None
        assert created.path == tree.s1.path + created.id.hex + "/"
        assert created.depth == 2
        assert created.region_type == "industrial_park"
        got = await client.get(r.headers["location"], headers=tree.h_member)
        assert got.json() == out
        audit = (
            await db.execute(select(AuditLog).where(AuditLog.object_id == out["id"]))
        ).scalar_one()
        assert audit.action == "org.created"
        assert audit.actor_id == tree.s1_officer.id
        event = (
            await db.execute(select(OutboxEvent).where(OutboxEvent.aggregate_id == out["id"]))
        ).scalar_one()
        assert event.topic == "org.created"
        assert event.payload == {"org_id": out["id"], "parent_id": str(tree.s1.id)}

    async def test_idempotent_retry_replays_the_first_answer(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        headers = {**tree.h_s1, "Idempotency-Key": "create-org-1"}
        first = await client.post("/orgs", headers=headers, json=regional(tree.s1))
        again = await client.post("/orgs", headers=headers, json=regional(tree.s1))
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
        assert await count(db, OutboxEvent) == 1

    async def test_officer_of_an_ancestor_creates_deeper(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        body = {"name": "三楼支部", "kind": "building", "parent_id": str(tree.b1.id)}
        r = await client.post("/orgs", headers=tree.h_s1, json=body)
        assert r.status_code == 201
        assert r.json()["depth"] == 5

    async def test_sibling_subtree_officer_is_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        before = await count_orgs(db)
        r = await client.post("/orgs", headers=tree.h_s2, json=regional(tree.s1))
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
        assert await count_orgs(db) == before

    async def test_officer_below_the_parent_is_403(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.post("/orgs", headers=tree.h_r1, json=regional(tree.s1))
        assert r.status_code == 403

    async def test_plain_member_is_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        before = await count_orgs(db)
        r = await client.post("/orgs", headers=tree.h_member, json=regional(tree.s1))
        assert r.status_code == 403
        assert await count_orgs(db) == before

    async def test_city_client_never_writes(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, h = await make_client(db, scopes="orgs:read roster:write")
        r = await client.post("/orgs", headers=h, json=regional(tree.s1))
        assert r.status_code == 403
        assert r.json()["code"] == "members_only"

    async def test_root_only_by_admin(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        body = {"name": "江北区", "kind": "district", "level": "committee"}
        r = await client.post("/orgs", headers=tree.h_s1, json=body)
        assert r.status_code == 403
        r = await client.post("/orgs", headers=tree.h_admin, json=body)
        assert r.status_code == 201
        created = await db.get(Organization, uuid.UUID(r.json()["id"]))
        assert created is not None
        assert created.path == f"/{created.id.hex}/"
        assert created.depth == 0
        assert created.parent_id is None

    @pytest.mark.parametrize(
        ("kind", "parent", "extra"),
        [
            ("street", "r1", {}),  # a street under a regional organization
            ("district", "d1", {}),  # a district has no parent
            ("enterprise", "s1", {}),  # an enterprise needs a regional organization above
            ("regional", "e1", {"region_type": "market"}),
            ("street", None, {}),  # only districts are roots
        ],
    )
    async def test_kind_rules_are_invalid_parent(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        kind: str,
        parent: str | None,
        extra: dict[str, str],
    ) -> None:
        before = await count_orgs(db)
        body: dict[str, Any] = {"name": "某组织", "kind": kind, **extra}
        if parent:
            body["parent_id"] = str(getattr(tree, parent).id)
        r = await client.post("/orgs", headers=tree.h_admin, json=body)
        errors = assert_422(r, "invalid_parent")
        assert errors[0]["field"] == "parent_id"
        assert await count_orgs(db) == before

    async def test_unknown_parent_is_invalid_parent(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.post(
            "/orgs", headers=tree.h_admin, json=regional(tree.s1, parent_id=str(uuid.uuid4()))
        )
        assert_422(r, "invalid_parent")

    @pytest.mark.parametrize(
        ("patch", "field"),
        [
            ({"name": ""}, "name"),
            ({"name": "   "}, "name"),
            ({"name": "长" * 101}, "name"),
            ({"kind": "planet"}, "kind"),
            ({"level": "club"}, "level"),
            ({"address": "址" * 201}, "address"),
            ({"location": {"lat": 91, "lng": 121}}, "location.lat"),
            ({"location": {"lat": 29, "lng": -181}}, "location.lng"),
            ({"location": {"lat": 29}}, "location.lng"),
            ({"parent_id": "not-a-uuid"}, "parent_id"),
            ({"depth": 0}, "depth"),
            ({"region_type": None}, "region_type"),  # required for regional
            ({"kind": "enterprise", "region_type": "market"}, "region_type"),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        patch: dict[str, Any],
        field: str,
    ) -> None:
        before = (await count_orgs(db), await count(db, AuditLog), await count(db, OutboxEvent))
        body = {**regional(tree.r1 if patch.get("kind") == "enterprise" else tree.s1), **patch}
        r = await client.post("/orgs", headers=tree.h_s1, json=body)
        errors = assert_422(r)
        assert field in [e["field"] for e in errors]
        after = (await count_orgs(db), await count(db, AuditLog), await count(db, OutboxEvent))
        assert after == before

    async def test_founding_form_not_on_administrative_levels(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        body = {
            "name": "新街道",
            "kind": "street",
            "founding_form": "attached",
            "parent_id": str(tree.d1.id),
        }
        errors = assert_422(await client.post("/orgs", headers=tree.h_admin, json=body))
        assert errors[0]["field"] == "founding_form"

    async def test_english_messages(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.post(
            "/orgs",
            headers={**tree.h_admin, "Accept-Language": "en"},
            json={"name": "x", "kind": "street", "parent_id": str(tree.r1.id)},
        )
        body = r.json()
        assert body["title"] == "The parent organization is not valid"
        assert body["errors"][0]["message"] == "A street can only be placed under: district"


class TestOrgsUpdate:
    async def test_officer_edits_fields(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}",
            headers=tree.h_s1,
            json={
                "name": " 力邦村党委 ",
                "level": "committee",
                "founding_form": "village_firm",
                "address": None,
                "location": {"lat": 29.61, "lng": 121.41},
            },
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["name"] == "力邦村党委"
        assert out["level"] == "committee"
        assert out["address"] is None
        assert out["region_type"] == "migrant_residence"  # untouched
        assert out["parent"] == {"id": str(tree.s1.id), "name": "西坞街道"}
        row = await fresh(db, tree.r1)
        assert (row.name, row.level, row.founding_form) == (
            "力邦村党委",
            "committee",
            "village_firm",
        )
        assert (row.address, row.lat, row.lng) == (None, 29.61, 121.41)
        assert row.path == tree.r1.path
        audit = (
            await db.execute(select(AuditLog).where(AuditLog.action == "org.updated"))
        ).scalar_one()
        assert audit.object_id == str(tree.r1.id)
        assert audit.actor_id == tree.s1_officer.id
        event = (
            await db.execute(select(OutboxEvent).where(OutboxEvent.topic == "org.updated"))
        ).scalar_one()
        assert event.payload["org_id"] == str(tree.r1.id)
        assert sorted(event.payload["changed"]) == [
            "address",
            "founding_form",
            "level",
            "location",
            "name",
        ]

    async def test_officer_of_the_org_itself_edits_it(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.patch(f"/orgs/{tree.r1.id}", headers=tree.h_r1, json={"name": "新名"})
        assert r.status_code == 200

    async def test_no_change_records_nothing(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}", headers=tree.h_s1, json={"name": tree.r1.name}
        )
        assert r.status_code == 200
        assert await count(db, AuditLog) == 0
        assert await count(db, OutboxEvent) == 0

    @pytest.mark.parametrize(
        "who",
        [
            pytest.param("h_s2", id="sibling_subtree_officer"),
            pytest.param("h_member", id="plain_member"),
        ],
    )
    async def test_refused_is_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, who: str
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}", headers=getattr(tree, who), json={"name": "夺"}
        )
        assert r.status_code == 403
        assert (await fresh(db, tree.r1)).name == "力邦村党总支"

    async def test_officer_below_is_403(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.patch(f"/orgs/{tree.s1.id}", headers=tree.h_r1, json={"name": "夺"})
        assert r.status_code == 403

    async def test_missing_is_404(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.patch(f"/orgs/{uuid.uuid4()}", headers=tree.h_admin, json={"name": "x"})
        assert r.status_code == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": None}, "name"),
            ({"kind": None}, "kind"),
            ({"name": "x" * 101}, "name"),
            ({"depth": 0}, "depth"),
            ({"is_admin": True}, "is_admin"),
            ({"location": {"lat": -91, "lng": 0}}, "location.lat"),
            ({"region_type": None}, "region_type"),  # a regional organization needs one
            ({"founding_form": "alliance"}, "founding_form"),
        ],
    )
    async def test_bad_input_is_422_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        body: dict[str, Any],
        field: str,
    ) -> None:
        r = await client.patch(f"/orgs/{tree.r1.id}", headers=tree.h_s1, json=body)
        errors = assert_422(r)
        assert field in [e["field"] for e in errors]
        row = await fresh(db, tree.r1)
        assert (row.name, row.kind, row.region_type, row.lat) == (
            "力邦村党总支",
            "regional",
            "migrant_residence",
            29.6,
        )
        assert await count(db, AuditLog) == 0

    async def test_kind_change_must_fit_parent_and_children(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        # e1 has a building child; turning e1 into a street fails at its parent first.
        r = await client.patch(f"/orgs/{tree.e1.id}", headers=tree.h_s1, json={"kind": "street"})
        assert_422(r, "invalid_parent")
        # s1 may hang under its district as a regional organization, but its regional
        # child r1 could not hang under a regional one.
        r = await client.patch(
            f"/orgs/{tree.s1.id}",
            headers=tree.h_admin,
            json={"kind": "regional", "region_type": "community"},
        )
        assert assert_422(r)[0]["field"] == "kind"
        assert (await fresh(db, tree.s1)).kind == "street"
        # s1 -> park keeps its regional child valid.
        r = await client.patch(f"/orgs/{tree.s1.id}", headers=tree.h_admin, json={"kind": "park"})
        assert r.status_code == 200
        # e1 (an enterprise with a building child) may become a building.
        r = await client.patch(f"/orgs/{tree.e1.id}", headers=tree.h_s1, json={"kind": "building"})
        assert r.status_code == 200
        # d2 cannot become a street: it has no parent.
        r = await client.patch(f"/orgs/{tree.d2.id}", headers=tree.h_admin, json={"kind": "street"})
        assert_422(r, "invalid_parent")

    async def test_children_must_fit_the_new_kind(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        # A regional organization directly under a district, with an enterprise below it;
        # becoming a street would fit the parent but not the enterprise child.
        r0 = await make_org(db, tree.d2, kind="regional", region_type="market")
        await make_org(db, r0, kind="enterprise")
        r = await client.patch(
            f"/orgs/{r0.id}", headers=tree.h_admin, json={"kind": "street", "region_type": None}
        )
        errors = assert_422(r)
        assert errors[0]["field"] == "kind"
        assert (await fresh(db, r0)).kind == "regional"


class TestOrgsMove:
    async def test_move_rewrites_the_subtree_in_one_update(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: Any
    ) -> None:
        with count_queries() as q:
            r = await client.patch(
                f"/orgs/{tree.r1.id}", headers=tree.h_admin, json={"parent_id": str(tree.s2.id)}
            )
        assert r.status_code == 200, r.text
        assert r.json()["parent"] == {"id": str(tree.s2.id), "name": "鼓楼街道"}
        path_updates = [
            s for s in q.statements if s.lstrip().upper().startswith("UPDATE ORGANIZATIONS")
        ]
        assert sum("path=" in s.replace(" ", "") for s in path_updates) == 1, q.statements
        r1, e1, b1 = [await fresh(db, o) for o in (tree.r1, tree.e1, tree.b1)]
        assert r1.parent_id == tree.s2.id
        assert r1.path == f"{tree.s2.path}{tree.r1.id.hex}/"
        assert e1.path == f"{r1.path}{tree.e1.id.hex}/"
        assert b1.path == f"{e1.path}{tree.b1.id.hex}/"
        assert (r1.depth, e1.depth, b1.depth) == (2, 3, 4)
        # Untouched elsewhere.
        assert (await fresh(db, tree.s1)).path == tree.s1.path
        assert (await fresh(db, tree.r3)).path == tree.r3.path
        # The subtree now belongs to the other street's officer, and no longer to s1's.
        assert (
            await client.patch(f"/orgs/{tree.b1.id}", headers=tree.h_s2, json={"name": "楼"})
        ).status_code == 200
        assert (
            await client.patch(f"/orgs/{tree.b1.id}", headers=tree.h_s1, json={"name": "楼"})
        ).status_code == 403
        event = (
            await db.execute(select(OutboxEvent).where(OutboxEvent.aggregate_id == str(r1.id)))
        ).scalar_one()
        assert event.payload["changed"] == ["parent_id"]
        assert event.payload["parent_id"] == str(tree.s2.id)

    async def test_officer_moves_within_own_subtree(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r_other = await make_org(db, tree.s1, kind="regional", region_type="community")
        r = await client.patch(
            f"/orgs/{tree.e1.id}", headers=tree.h_s1, json={"parent_id": str(r_other.id)}
        )
        assert r.status_code == 200
        b1 = await fresh(db, tree.b1)
        assert b1.path == f"{r_other.path}{tree.e1.id.hex}/{tree.b1.id.hex}/"
        assert b1.depth == 4

    async def test_new_parent_outside_scope_is_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}", headers=tree.h_s1, json={"parent_id": str(tree.s2.id)}
        )
        assert r.status_code == 403
        assert (await fresh(db, tree.r1)).parent_id == tree.s1.id
        assert (await fresh(db, tree.b1)).path == tree.b1.path

    async def test_sibling_officer_cannot_pull_an_org_over(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}", headers=tree.h_s2, json={"parent_id": str(tree.s2.id)}
        )
        assert r.status_code == 403
        assert (await fresh(db, tree.r1)).parent_id == tree.s1.id

    @pytest.mark.parametrize("target", ["e1", "b1"])
    async def test_move_under_own_subtree_is_invalid_parent(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, target: str
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.e1.id}",
            headers=tree.h_admin,
            json={"parent_id": str(getattr(tree, target).id)},
        )
        assert_422(r, "invalid_parent")
        e1 = await fresh(db, tree.e1)
        assert (e1.parent_id, e1.path) == (tree.r1.id, tree.e1.path)

    async def test_unknown_new_parent_is_invalid_parent(
        self, client: httpx.AsyncClient, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.e1.id}", headers=tree.h_admin, json={"parent_id": str(uuid.uuid4())}
        )
        assert_422(r, "invalid_parent")

    async def test_kind_rules_apply_to_moves(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.patch(
            f"/orgs/{tree.r1.id}", headers=tree.h_admin, json={"parent_id": str(tree.r3.id)}
        )
        assert_422(r, "invalid_parent")
        assert (await fresh(db, tree.r1)).parent_id == tree.s1.id

    async def test_making_a_root(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        # A district hanging under nothing is already a root; a street cannot become one.
        r = await client.patch(
            f"/orgs/{tree.s1.id}", headers=tree.h_admin, json={"parent_id": None}
        )
        assert_422(r, "invalid_parent")
        r = await client.patch(
            f"/orgs/{tree.s1.id}",
            headers=tree.h_s1,
            json={"parent_id": None, "kind": "district"},
        )
        assert r.status_code == 403  # only an admin makes a root
        r = await client.patch(
            f"/orgs/{tree.s1.id}",
            headers=tree.h_admin,
            json={"parent_id": None, "kind": "district"},
        )
        assert r.status_code == 200
        assert r.json()["parent"] is None
        b1 = await fresh(db, tree.b1)
        assert b1.path == f"/{tree.s1.id.hex}/{tree.r1.id.hex}/{tree.e1.id.hex}/{tree.b1.id.hex}/"
        assert b1.depth == 3
