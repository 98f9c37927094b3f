from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.kit import AuditLog, OutboxEvent
from app.models.organization import Officer
from tests.fixtures.factories import make_client, make_officer, make_user
from tests.fixtures.orgs import Tree


async def officers_of(db: AsyncSession, org_id: uuid.UUID) -> list[Officer]:
    rows = await db.execute(
        select(Officer).where(Officer.org_id == org_id).execution_options(populate_existing=True)
    )
    return list(rows.scalars())


async def count(db: AsyncSession, model: Any) -> int:
    return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


class TestOfficersList:
    async def test_officer_covering_the_org_lists_with_masked_phones(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        deputy = await make_officer(
            db, tree.r1, await make_user(db, name="副书记"), "deputy_secretary"
        )
        for headers in (tree.h_r1, tree.h_s1, tree.h_admin):
            r = await client.get(f"/orgs/{tree.r1.id}/officers", headers=headers)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert [i["name"] for i in items] == ["区域书记", "副书记"]
            assert r.json()["next_cursor"] is None
        first = items[0]
        assert first["user_id"] == str(tree.r1_officer.id)
        assert first["org_id"] == str(tree.r1.id)
        assert first["role"] == "secretary"
        assert first["appointed_by"] == "hired"
        phone = tree.r1_officer.phone
        assert first["phone_masked"] == f"{phone[:3]}****{phone[-4:]}"
        assert phone not in r.text
        assert deputy.phone not in r.text
        assert "phone" not in first

    async def test_pages(self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree) -> None:
        for _ in range(4):
            await make_officer(db, tree.r1, role="worker")
        r = await client.get(f"/orgs/{tree.r1.id}/officers", headers=tree.h_s1, params={"limit": 3})
        first = r.json()
        assert len(first["items"]) == 3
        r = await client.get(
            f"/orgs/{tree.r1.id}/officers",
            headers=tree.h_s1,
            params={"limit": 3, "cursor": first["next_cursor"]},
        )
        second = r.json()
        assert len(second["items"]) == 2
        assert second["next_cursor"] is None
        ids = {i["id"] for i in first["items"] + second["items"]}
        assert len(ids) == 5

    @pytest.mark.parametrize(
        ("org", "who"),
        [
            pytest.param("r1", "h_s2", id="sibling_subtree_officer"),
            pytest.param("s1", "h_r1", id="officer_below"),
        ],
    )
    async def test_officer_not_above_is_403(
        self, client: httpx.AsyncClient, tree: Tree, org: str, who: str
    ) -> None:
        r = await client.get(f"/orgs/{getattr(tree, org).id}/officers", headers=getattr(tree, who))
        assert r.status_code == 403

    async def test_member_and_city_client_are_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.get(f"/orgs/{tree.r1.id}/officers", headers=tree.h_member)
        assert r.status_code == 403
        _, h = await make_client(db, scopes="orgs:read")
        r = await client.get(f"/orgs/{tree.r1.id}/officers", headers=h)
        assert r.status_code == 403
        assert r.json()["code"] == "members_only"

    async def test_missing_org_is_404(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.get(f"/orgs/{uuid.uuid4()}/officers", headers=tree.h_admin)
        assert r.status_code == 404


class TestOfficersCreate:
    async def test_officer_above_appoints(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.post(
            f"/orgs/{tree.r1.id}/officers",
            headers=tree.h_s1,
            json={"user_id": str(tree.member.id), "role": "worker", "appointed_by": "seconded"},
        )
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["user_id"] == str(tree.member.id)
        assert out["name"] == "党员"
        assert out["role"] == "worker"
        assert out["appointed_by"] == "seconded"
        assert out["phone_masked"] == tree.member.phone[:3] + "****" + tree.member.phone[-4:]
        rows = await officers_of(db, tree.r1.id)
        assert {(o.user_id, o.role) for o in rows} == {
            (tree.r1_officer.id, "secretary"),
            (tree.member.id, "worker"),
        }
        audit = (
            await db.execute(select(AuditLog).where(AuditLog.object_id == out["id"]))
        ).scalar_one()
        assert (audit.action, audit.org_id, audit.actor_id) == (
            "org.officer_appointed",
            tree.r1.id,
            tree.s1_officer.id,
        )
        event = (
            await db.execute(
                select(OutboxEvent).where(OutboxEvent.topic == "org.officer_appointed")
            )
        ).scalar_one()
        assert event.payload["officer_id"] == out["id"]
        assert tree.member.phone not in str(event.payload)
        # The new worker now acts on r1's subtree.
        h = tree.h_member
        assert (
            await client.patch(f"/orgs/{tree.e1.id}", headers=h, json={"name": "新"})
        ).status_code == 200

    async def test_admin_appoints_at_a_root(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.post(
            f"/orgs/{tree.d1.id}/officers",
            headers=tree.h_admin,
            json={"user_id": str(tree.member.id), "role": "secretary", "appointed_by": "hired"},
        )
        assert r.status_code == 201

    @pytest.mark.parametrize(
        ("who", "appointee", "role"),
        [
            pytest.param("h_r1", "member", "worker", id="own_officer_is_not_above"),
            pytest.param("h_s2", "s2_officer", "worker", id="sibling_subtree_officer"),
            pytest.param("h_member", "member", "secretary", id="plain_member"),
        ],
    )
    async def test_refused_is_403(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        who: str,
        appointee: str,
        role: str,
    ) -> None:
        r = await client.post(
            f"/orgs/{tree.r1.id}/officers",
            headers=getattr(tree, who),
            json={
                "user_id": str(getattr(tree, appointee).id),
                "role": role,
                "appointed_by": "hired",
            },
        )
        assert r.status_code == 403
        assert len(await officers_of(db, tree.r1.id)) == 1

    async def test_duplicate_is_409(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        r = await client.post(
            f"/orgs/{tree.r1.id}/officers",
            headers=tree.h_s1,
            json={"user_id": str(tree.r1_officer.id), "role": "worker", "appointed_by": "hired"},
        )
        assert r.status_code == 409
        assert r.json()["code"] == "officer_exists"
        rows = await officers_of(db, tree.r1.id)
        assert [(o.user_id, o.role) for o in rows] == [(tree.r1_officer.id, "secretary")]
        assert await count(db, AuditLog) == 0
        assert await count(db, OutboxEvent) == 0

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"user_id": None}, "user_id"),
            ({"user_id": "nope"}, "user_id"),
            ({"role": "chairman"}, "role"),
            ({"appointed_by": "elected"}, "appointed_by"),
            ({"is_admin": True}, "is_admin"),
            ({"unknown_user": True}, "user_id"),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        body: dict[str, Any],
        field: str,
    ) -> None:
        payload: dict[str, Any] = {
            "user_id": str(tree.member.id),
            "role": "worker",
            "appointed_by": "hired",
        }
        if body.pop("unknown_user", False):
            payload["user_id"] = str(uuid.uuid4())
        payload.update(body)
        r = await client.post(f"/orgs/{tree.r1.id}/officers", headers=tree.h_s1, json=payload)
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "validation_error"
        assert field in [e["field"] for e in r.json()["errors"]]
        assert len(await officers_of(db, tree.r1.id)) == 1
        assert await count(db, AuditLog) == 0

    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_concurrent_duplicates_make_one_officer(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        body = {"user_id": str(tree.member.id), "role": "worker", "appointed_by": "hired"}
        answers = await asyncio.gather(
            *(
                client.post(f"/orgs/{tree.r1.id}/officers", headers=tree.h_s1, json=body)
                for _ in range(8)
            )
        )
        assert sorted(r.status_code for r in answers) == [201] + [409] * 7
        assert len(await officers_of(db, tree.r1.id)) == 2
        assert await count(db, AuditLog) == 1

    async def test_missing_org_is_404(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.post(
            f"/orgs/{uuid.uuid4()}/officers",
            headers=tree.h_admin,
            json={"user_id": str(tree.member.id), "role": "worker", "appointed_by": "hired"},
        )
        assert r.status_code == 404


class TestOfficersDelete:
    async def test_officer_above_removes(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        (officer,) = await officers_of(db, tree.r1.id)
        r = await client.delete(f"/orgs/{tree.r1.id}/officers/{officer.id}", headers=tree.h_s1)
        assert r.status_code == 204
        assert r.content == b""
        assert await officers_of(db, tree.r1.id) == []
        audit = (await db.execute(select(AuditLog))).scalar_one()
        assert (audit.action, audit.object_id, audit.from_state) == (
            "org.officer_removed",
            str(officer.id),
            "secretary",
        )
        event = (await db.execute(select(OutboxEvent))).scalar_one()
        assert event.topic == "org.officer_removed"
        # The removed secretary no longer acts there.
        r = await client.patch(f"/orgs/{tree.r1.id}", headers=tree.h_r1, json={"name": "x"})
        assert r.status_code == 403
        r = await client.delete(f"/orgs/{tree.r1.id}/officers/{officer.id}", headers=tree.h_s1)
        assert r.status_code == 404

    async def test_officer_of_another_org_is_404(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        (other,) = await officers_of(db, tree.s2.id)
        r = await client.delete(f"/orgs/{tree.r1.id}/officers/{other.id}", headers=tree.h_admin)
        assert r.status_code == 404
        assert len(await officers_of(db, tree.s2.id)) == 1

    @pytest.mark.parametrize(
        "who",
        [
            pytest.param("h_r1", id="own_officer_cannot_remove"),
            pytest.param("h_s2", id="sibling_subtree_officer"),
            pytest.param("h_member", id="plain_member"),
        ],
    )
    async def test_refused_is_403(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, who: str
    ) -> None:
        (officer,) = await officers_of(db, tree.r1.id)
        r = await client.delete(
            f"/orgs/{tree.r1.id}/officers/{officer.id}", headers=getattr(tree, who)
        )
        assert r.status_code == 403
        assert len(await officers_of(db, tree.r1.id)) == 1

    async def test_malformed_id_is_422(self, client: httpx.AsyncClient, tree: Tree) -> None:
        r = await client.delete(f"/orgs/{tree.r1.id}/officers/abc", headers=tree.h_admin)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "officer_id"
