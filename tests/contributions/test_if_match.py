"""A moving target: a record edited by its member between the officer's read and the officer's
decision.  Decisions honour `If-Match` (412 when the record changed since it was read), each
record's ETag and the queue's ETag change with every edit, and a batch takes an ETag per id."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.contribution import Contribution
from app.models.kit import AuditLog
from tests.contributions.helpers import World, act, count, create, status_of, today, written
from tests.fixtures.problems import assert_problem

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def queue_item(client: httpx.AsyncClient, world: World, record_id: str) -> dict[str, Any]:
    """The record as the officer of r1 reads it in the queue."""
    r = await client.get(
        f"/orgs/{world.tree.r1.id}/contributions",
        params={"status": "pending"},
        headers=world.tree.h_r1,
    )
    assert r.status_code == 200, r.text
    item: dict[str, Any] = next(i for i in r.json()["items"] if i["id"] == record_id)
    return item


async def edit(client: httpx.AsyncClient, world: World, record_id: str, **fields: Any) -> None:
    r = await client.patch(f"/contributions/{record_id}", json=fields, headers=world.alice.headers)
    assert r.status_code == 200, r.text


async def approve(
    client: httpx.AsyncClient, world: World, record_id: str, if_match: str
) -> httpx.Response:
    return await client.post(
        f"/contributions/{record_id}/approve",
        json={},
        headers={**world.tree.h_r1, "If-Match": if_match},
    )


class TestDecisionIfMatch:
    async def test_an_edit_after_the_read_makes_the_approval_412(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """The attack: the officer reads 1 hour, the member makes it 8, the officer's approval
        (with the ETag read) used to approve 8 hours.  Now: 412, nothing decided."""
        record = await create(client, world.alice, world.tree.r1, hours=1)
        read = await queue_item(client, world, record["id"])
        assert read["hours"] == 1
        await edit(client, world, record["id"], hours=8)
        before = await written(sessionmaker)
        r = await approve(client, world, record["id"], read["etag"])
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, record["id"]) == "pending"
        assert await written(sessionmaker) == before
        # Read again: a new ETag, with which the decision goes through.
        again = await queue_item(client, world, record["id"])
        assert again["hours"] == 8
        assert again["etag"] != read["etag"]
        r = await approve(client, world, record["id"], again["etag"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        assert r.json()["hours"] == 8
        # The decision is an edit too: the ETag read before it is stale now.
        assert r.json()["etag"] not in (again["etag"], read["etag"])

    @pytest.mark.parametrize("action", ["reject", "return"])
    async def test_every_decision_honours_it(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        action: str,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        read = await queue_item(client, world, record["id"])
        await edit(client, world, record["id"], title="改过的标题")
        r = await client.post(
            f"/contributions/{record['id']}/{action}",
            json={"reason": "不实"},
            headers={**world.tree.h_r1, "If-Match": read["etag"]},
        )
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, record["id"]) == "pending"

    async def test_evidence_added_after_the_read_is_an_edit(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        read = await queue_item(client, world, record["id"])
        r = await client.post(
            f"/contributions/{record['id']}/attachments",
            files={"file": ("proof.pdf", PDF, "application/pdf")},
            headers=world.alice.headers,
        )
        assert r.status_code == 201, r.text
        r = await approve(client, world, record["id"], read["etag"])
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, record["id"]) == "pending"

    async def test_an_edit_that_changes_nothing_visible_still_changes_the_etags(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        record = await create(client, world.alice, world.tree.r1, title="原标题")
        url = f"/orgs/{world.tree.r1.id}/contributions"
        first = await client.get(url, headers=world.tree.h_r1)
        read = await queue_item(client, world, record["id"])
        await edit(client, world, record["id"], title="原标题")
        second = await client.get(url, headers=world.tree.h_r1)
        assert first.headers["etag"] != second.headers["etag"]
        # The queue read with its old ETag is not "not modified".
        r = await client.get(
            url, headers={**world.tree.h_r1, "If-None-Match": first.headers["etag"]}
        )
        assert r.status_code == 200
        assert (await queue_item(client, world, record["id"]))["etag"] != read["etag"]
        assert_problem(
            await approve(client, world, record["id"], read["etag"]), 412, "precondition_failed"
        )

    @pytest.mark.parametrize(
        "header", ['"999"', 'W/"1"', "1", '"1.1"', '"abc"', "garbage, ,", '"0", "999"']
    )
    async def test_a_tag_that_is_not_the_current_one_never_matches(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
        header: str,
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        r = await approve(client, world, record["id"], header)
        assert_problem(r, 412, "precondition_failed")
        assert await status_of(sessionmaker, record["id"]) == "pending"

    async def test_star_a_list_with_the_current_tag_or_none_at_all_decide(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        for header in ("*", None, "list"):
            record = await create(client, world.alice, world.tree.r1)
            read = await queue_item(client, world, record["id"])
            headers = dict(world.tree.h_r1)
            if header == "list":
                headers["If-Match"] = f'"999", {read["etag"]}'
            elif header is not None:
                headers["If-Match"] = header
            r = await client.post(
                f"/contributions/{record['id']}/approve", json={}, headers=headers
            )
            assert r.status_code == 200, (header, r.text)

    async def test_who_may_not_decide_learns_nothing_from_it(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        """404 outside the subtree and 403 for one's own come before the precondition."""
        record = await create(client, world.alice, world.tree.r1)
        r = await client.post(
            f"/contributions/{record['id']}/approve",
            json={},
            headers={**world.tree.h_s2, "If-Match": '"999"'},
        )
        assert_problem(r, 404, "not_found")

    async def test_a_decided_record_with_a_stale_tag_is_412(
        self, client: httpx.AsyncClient, world: World
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        read = await queue_item(client, world, record["id"])
        assert (await approve(client, world, record["id"], read["etag"])).status_code == 200
        assert_problem(
            await approve(client, world, record["id"], read["etag"]), 412, "precondition_failed"
        )
        # Without a precondition the state answers, as before.
        r = await act(client, world.tree.h_r1, record["id"], "approve", {})
        assert_problem(r, 409, "invalid_transition")

    async def test_decisions_document_if_match_and_412(self, client: httpx.AsyncClient) -> None:
        document = (await client.get("http://test/openapi.json")).json()
        for path in (
            "/api/v1/contributions/{record_id}/approve",
            "/api/v1/contributions/{record_id}/reject",
            "/api/v1/contributions/{record_id}/return",
            "/api/v1/checkins/{checkin_id}/approve",
            "/api/v1/checkins/{checkin_id}/reject",
        ):
            operation = document["paths"][path]["post"]
            assert "412" in operation["responses"], path
            names = [(p["in"], p["name"]) for p in operation.get("parameters", [])]
            assert ("header", "If-Match") in names, path


class TestBatchIfMatch:
    async def test_an_etag_per_id(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        kept = await create(client, world.alice, world.tree.r1, hours=1)
        moved = await create(client, world.alice, world.tree.r1, hours=1)
        free = await create(client, world.alice, world.tree.r1, hours=1)
        etags = {i: (await queue_item(client, world, i))["etag"] for i in (kept["id"], moved["id"])}
        await edit(client, world, moved["id"], hours=6)
        ids = [kept["id"], moved["id"], free["id"]]
        r = await client.post(
            "/contributions/review",
            json={"ids": ids, "decision": "approve", "if_match": etags},
            headers=world.tree.h_r1,
        )
        assert r.status_code == 200, r.text
        results = {x["id"]: x for x in r.json()["results"]}
        assert results[kept["id"]] == {
            "id": kept["id"],
            "ok": True,
            "status": "approved",
            "code": None,
        }
        assert results[moved["id"]] == {
            "id": moved["id"],
            "ok": False,
            "status": "pending",
            "code": "precondition_failed",
        }
        assert results[free["id"]]["ok"] is True
        assert await status_of(sessionmaker, moved["id"]) == "pending"
        approvals = await count(
            sessionmaker,
            AuditLog,
            AuditLog.object_id == moved["id"],
            AuditLog.to_state == "approved",
        )
        assert approvals == 0

    async def test_if_match_only_for_ids_of_the_batch(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        record = await create(client, world.alice, world.tree.r1)
        other = await create(client, world.alice, world.tree.r1)
        before = await written(sessionmaker)
        for if_match in ({other["id"]: '"1"'}, {record["id"]: "not a tag"}):
            r = await client.post(
                "/contributions/review",
                json={"ids": [record["id"]], "decision": "approve", "if_match": if_match},
                headers=world.tree.h_r1,
            )
            assert_problem(r, 422, "validation_error")
        assert await written(sessionmaker) == before


class TestConcurrentEditAndDecision:
    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_the_edit_or_the_approval_of_what_was_read_never_both(
        self,
        client: httpx.AsyncClient,
        world: World,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        """The member's edit and the officer's approval of the version read race; whichever
        commits first wins and the other is refused: an approved record is always the one
        the officer read."""
        for n in range(8):
            # A day of its own per round: the daily cap of 24 hours stays out of the race.
            day = (today() - timedelta(days=1 + n)).isoformat()
            record = await create(client, world.alice, world.tree.r1, hours=1, occurred_on=day)
            read = await queue_item(client, world, record["id"])
            edited, approved = await asyncio.gather(
                client.patch(
                    f"/contributions/{record['id']}",
                    json={"hours": 9},
                    headers=world.alice.headers,
                ),
                approve(client, world, record["id"], read["etag"]),
            )
            assert edited.status_code in (200, 409), edited.text
            assert approved.status_code in (200, 412), approved.text
            assert (edited.status_code == 200) != (approved.status_code == 200)
            async with sessionmaker() as session:
                row = (
                    await session.execute(
                        select(Contribution.status, Contribution.half_hours).where(
                            Contribution.id == uuid.UUID(record["id"])
                        )
                    )
                ).one()
            if approved.status_code == 200:
                assert tuple(row) == ("approved", 2)
            else:
                assert tuple(row) == ("pending", 18)
