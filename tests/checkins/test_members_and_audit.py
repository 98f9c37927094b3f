"""GET /orgs/{org_id}/members (approved, masked, floating, search) and
GET /orgs/{org_id}/audit-log (newest first, filters)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import crypto
from app.core.audit import audit
from tests.checkins.helpers import (
    CountQueries,
    approve,
    in_state,
    make_member,
    submit,
)
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


async def _pages(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(url, params=query, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


class TestOrgsMembersList:
    async def test_approved_members_masked(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        id_number = "11010519491231002X"
        local, local_headers = await make_member(
            db,
            name="周六",
            phone="13700001111",
            record_org_id=tree.e1.id,
            record_org_name=None,
            id_number_enc=crypto.encrypt(id_number, context="users.id_number"),
            id_number_masked=crypto.mask_id_number(id_number),
            gender="female",
            post_title="工程师",
        )
        floater, floater_headers = await make_member(db, name="吴七", phone="13700002222")
        a = await submit(client, local_headers, tree.e1)
        await approve(client, tree.h_r1, a["id"])
        b = await submit(client, floater_headers, tree.r1)
        await approve(client, tree.h_r1, b["id"])
        # Not members: pending, left, and approved in a sibling subtree.
        await in_state(client, db, tree, "pending")
        await in_state(client, db, tree, "left")
        c = await submit(client, local_headers, tree.r2)
        await approve(client, tree.h_r2, c["id"])

        r = await client.get(f"/orgs/{tree.r1.id}/members", headers=tree.h_r1)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [i["checkin_id"] for i in items] == [b["id"], a["id"]]
        assert items[1] == {
            "checkin_id": a["id"],
            "user_id": str(local.id),
            "name": "周六",
            "phone_masked": "137****1111",
            "id_number_masked": "1101**********002X",
            "gender": "female",
            "party_status": "full",
            "employer": "甬新科技有限公司",
            "post_title": "工程师",
            "record_org": {"id": str(tree.e1.id), "name": tree.e1.name},
            "floating": False,
            "org": {"id": str(tree.e1.id), "name": tree.e1.name, "kind": "enterprise"},
            "registered_at": items[1]["registered_at"],
        }
        assert items[1]["registered_at"] is not None
        assert items[0]["floating"] is True
        assert items[0]["record_org"] == {"id": None, "name": "宁波某外地企业党支部"}
        for raw in ("13700001111", "13700002222", id_number):
            assert raw not in r.text
        assert str(floater.id) == items[0]["user_id"]

        url = f"/orgs/{tree.r1.id}/members"
        floating = await _pages(client, url, tree.h_r1, floating="true", limit=1)
        assert [i["checkin_id"] for i in floating] == [b["id"]]
        local_only = await _pages(client, url, tree.h_r1, floating="false")
        assert [i["checkin_id"] for i in local_only] == [a["id"]]
        everyone = await _pages(client, f"/orgs/{tree.s1.id}/members", tree.h_s1_worker, limit=1)
        assert len(everyone) == 3

    async def test_search_by_name_escapes_wildcards(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        names = ["张伟", "张_伟", "李100%"]
        ids = {}
        for name in names:
            _, headers = await make_member(db, name=name)
            created = await submit(client, headers, tree.r1)
            await approve(client, tree.h_r1, created["id"])
            ids[name] = created["id"]
        url = f"/orgs/{tree.r1.id}/members"

        async def found(q: str) -> set[str]:
            return {i["name"] for i in await _pages(client, url, tree.h_r1, q=q)}

        assert await found("张") == {"张伟", "张_伟"}
        assert await found("_") == {"张_伟"}
        assert await found("%") == {"李100%"}
        assert await found(" 伟 ") == {"张伟", "张_伟"}
        assert await found("王") == set()
        r = await client.get(url, params={"q": ""}, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")
        r = await client.get(url, params={"q": "长" * 51}, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")

    async def test_outsiders(self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree) -> None:
        _, member = await make_member(db)
        for who in (tree.h_r2, member):
            r = await client.get(f"/orgs/{tree.r1.id}/members", headers=who)
            assert_problem(r, 403, "forbidden")
        r = await client.get(f"/orgs/{uuid.uuid4()}/members", headers=tree.h_r1)
        assert_problem(r, 404, "not_found")

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: CountQueries
    ) -> None:
        async def queries() -> int:
            with count_queries() as q:
                r = await client.get(
                    f"/orgs/{tree.r1.id}/members",
                    params={"floating": "true", "q": "李"},
                    headers=tree.h_r1,
                )
            assert r.status_code == 200
            return q.count

        await in_state(client, db, tree, "approved")
        one = await queries()
        for org in ("e1", "b1", "r1", "e1"):
            await in_state(client, db, tree, "approved", org=org)
        assert await queries() == one


class TestOrgsAuditLogList:
    async def test_subtree_newest_first_with_filters(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        member, headers = await make_member(db)
        at_e1 = await submit(client, headers, tree.e1)
        await approve(client, tree.h_r1, at_e1["id"])
        at_r1 = await submit(client, headers, tree.r1)
        r = await client.post(
            f"/checkins/{at_r1['id']}/reject", json={"reason": "重复报到"}, headers=tree.h_r1
        )
        assert r.status_code == 200
        await submit(client, headers, tree.r2)  # another subtree's entry

        url = f"/orgs/{tree.r1.id}/audit-log"
        entries = await _pages(client, url, tree.h_r1, limit=1)
        assert [(e["action"], e["object_id"]) for e in entries] == [
            ("checkin.rejected", at_r1["id"]),
            ("checkin.submitted", at_r1["id"]),
            ("checkin.approved", at_e1["id"]),
            ("checkin.submitted", at_e1["id"]),
        ]
        rejected = entries[0]
        assert rejected["from_state"] == "pending"
        assert rejected["to_state"] == "rejected"
        assert rejected["comment"] == "重复报到"
        assert rejected["actor_id"] == str(tree.r1_officer.id)
        assert rejected["actor_name"] == tree.r1_officer.name == "区域书记"
        assert rejected["object_type"] == "checkin"
        assert rejected["org"] == {"id": str(tree.r1.id), "name": tree.r1.name, "kind": "regional"}

        approved = await _pages(client, url, tree.h_r1, action="checkin.approved")
        assert [e["object_id"] for e in approved] == [at_e1["id"]]
        by_member = await _pages(client, url, tree.h_r1, actor_id=str(member.id))
        assert [e["action"] for e in by_member] == ["checkin.submitted", "checkin.submitted"]
        by_both = await _pages(
            client, url, tree.h_r1, actor_id=str(member.id), action="checkin.rejected"
        )
        assert by_both == []
        # The street's officer sees the sibling subtree's entry too.
        assert len(await _pages(client, f"/orgs/{tree.s1.id}/audit-log", tree.h_s1_worker)) == 5

    async def test_entries_without_organization_are_not_shown(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        audit(db, action="user.login", object_type="user", object_id=None, org_id=None)
        await db.commit()
        r = await client.get(f"/orgs/{tree.s1.id}/audit-log", headers=tree.h_s1_worker)
        assert r.json()["items"] == []

    async def test_outsiders_and_bad_input(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, member = await make_member(db)
        url = f"/orgs/{tree.r1.id}/audit-log"
        for who in (tree.h_r2, member):
            assert_problem(await client.get(url, headers=who), 403, "forbidden")
        r = await client.get(url, params={"actor_id": "me"}, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")
        r = await client.get(url, params={"action": "x" * 61}, headers=tree.h_r1)
        assert_problem(r, 422, "validation_error")

    async def test_fixed_number_of_queries(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree, count_queries: CountQueries
    ) -> None:
        async def queries() -> int:
            with count_queries() as q:
                r = await client.get(f"/orgs/{tree.r1.id}/audit-log", headers=tree.h_r1)
            assert r.status_code == 200
            return q.count

        await in_state(client, db, tree, "pending")
        one = await queries()
        for state in ("approved", "left", "rejected"):
            await in_state(client, db, tree, state, org="e1")
        assert await queries() == one
