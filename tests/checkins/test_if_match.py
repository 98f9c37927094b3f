"""A check-in is decided on its member's declarations (party status, employer, record
organization) as read in the queue: an officer's `If-Match` is refused with 412 once the
member changed them, the check-in's ETag and the queue's change with each such edit, and a
batch takes an ETag per id."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.checkins.helpers import make_member, status_of, submit, written
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


async def queue_item(client: httpx.AsyncClient, tree: Tree, checkin_id: str) -> dict[str, Any]:
    r = await client.get(
        f"/orgs/{tree.r1.id}/checkins", params={"status": "pending"}, headers=tree.h_r1
    )
    assert r.status_code == 200, r.text
    item: dict[str, Any] = next(i for i in r.json()["items"] if i["id"] == checkin_id)
    return item


class TestCheckinDecisionIfMatch:
    async def test_a_profile_edit_after_the_read_makes_the_approval_412(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """The attack: the officer reads a full member of a local employer; before the
        approval the member becomes a probationary member employed elsewhere; the approval
        used to go through as edited.  Now: 412, the check-in stays pending."""
        _, headers = await make_member(db)
        checkin = await submit(client, headers, tree.r1)
        read = await queue_item(client, tree, checkin["id"])
        assert read["member"]["party_status"] == "full"
        r = await client.patch(
            "/me", json={"party_status": "probationary", "employer": "别处"}, headers=headers
        )
        assert r.status_code == 200, r.text
        before = await written(sessionmaker)
        r = await client.post(
            f"/checkins/{checkin['id']}/approve",
            json={},
            headers={**tree.h_r1, "If-Match": read["etag"]},
        )
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, checkin["id"]) == "pending"
        assert await written(sessionmaker) == before
        again = await queue_item(client, tree, checkin["id"])
        assert again["etag"] != read["etag"]
        assert again["member"]["party_status"] == "probationary"
        r = await client.post(
            f"/checkins/{checkin['id']}/reject",
            json={"reason": "请核实党籍"},
            headers={**tree.h_r1, "If-Match": again["etag"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "rejected"

    async def test_the_queue_etag_changes_with_the_edit(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        await submit(client, headers, tree.r1)
        url = f"/orgs/{tree.r1.id}/checkins"
        first = await client.get(url, headers=tree.h_r1)
        # A field the queue does not show: nothing visible changes, the versions do.
        r = await client.patch("/me", json={"post_title": "车间主任"}, headers=headers)
        assert r.status_code == 200, r.text
        r = await client.get(url, headers={**tree.h_r1, "If-None-Match": first.headers["etag"]})
        assert r.status_code == 200
        assert r.headers["etag"] != first.headers["etag"]

    async def test_withdrawn_and_submitted_again_is_another_record(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db)
        checkin = await submit(client, headers, tree.r1)
        read = await queue_item(client, tree, checkin["id"])
        r = await client.post(f"/checkins/{checkin['id']}/withdraw", headers=headers)
        assert r.status_code == 200, r.text
        r = await client.post(
            f"/checkins/{checkin['id']}/approve",
            json={},
            headers={**tree.h_r1, "If-Match": read["etag"]},
        )
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, checkin["id"]) == "withdrawn"

    async def test_an_outsider_gets_404_whatever_the_tag(
        self, client: httpx.AsyncClient, db: AsyncSession, tree: Tree
    ) -> None:
        _, headers = await make_member(db)
        checkin = await submit(client, headers, tree.r1)
        r = await client.post(
            f"/checkins/{checkin['id']}/approve",
            json={},
            headers={**tree.h_s2, "If-Match": '"999.999"'},
        )
        assert_problem(r, 404, "not_found")


class TestCheckinBatchIfMatch:
    async def test_an_etag_per_id(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, steady = await make_member(db)
        _, moving = await make_member(db)
        a = (await submit(client, steady, tree.r1))["id"]
        b = (await submit(client, moving, tree.r1))["id"]
        etags = {i: (await queue_item(client, tree, i))["etag"] for i in (a, b)}
        r = await client.patch("/me", json={"party_status": "probationary"}, headers=moving)
        assert r.status_code == 200, r.text
        r = await client.post(
            "/checkins/review",
            json={"ids": [a, b], "decision": "approve", "if_match": etags},
            headers=tree.h_r1,
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [
            {"id": a, "ok": True, "status": "approved", "code": None},
            {"id": b, "ok": False, "status": "pending", "code": "precondition_failed"},
        ]
        assert await status_of(sessionmaker, b) == "pending"

    async def test_if_match_of_an_id_not_in_the_batch_is_422(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        tree: Tree,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        _, headers = await make_member(db)
        a = (await submit(client, headers, tree.r1))["id"]
        before = await written(sessionmaker)
        r = await client.post(
            "/checkins/review",
            json={
                "ids": [a],
                "decision": "approve",
                "if_match": {"5f0c6f5e-9a53-4c1b-9d0e-2a51e1f0a001": '"1.1"'},
            },
            headers=tree.h_r1,
        )
        assert_problem(r, 422, "validation_error")
        assert await written(sessionmaker) == before
