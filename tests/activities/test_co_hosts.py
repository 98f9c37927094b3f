"""Co-hosting across subtrees: an officer naming a co-host outside their subtree invites it,
and the activity reaches that organization's members only once an officer of it accepts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.kit import AuditLog
from tests.activities.conftest import (
    Headers,
    World,
    accept_co_host,
    activity_body,
    create_activity,
    member_of,
)
from tests.fixtures.factories import login, make_officer
from tests.fixtures.orgs import Tree
from tests.fixtures.problems import assert_problem


async def _listed(client: httpx.AsyncClient, headers: Headers, **params: Any) -> list[str]:
    r = await client.get("/activities", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


async def _invitations(
    client: httpx.AsyncClient, org_id: Any, headers: Headers, **params: Any
) -> list[dict[str, Any]]:
    r = await client.get(f"/orgs/{org_id}/co-host-invitations", headers=headers, params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _decide(
    client: httpx.AsyncClient, org_id: Any, activity_id: str, action: str, headers: Headers
) -> Any:
    return client.post(
        f"/orgs/{org_id}/co-host-invitations/{activity_id}/{action}", headers=headers
    )


async def _outside_officer(db: AsyncSession, world: World) -> Headers:
    """The secretary of the organization in the other district."""
    return await login(db, await make_officer(db, world.outside))


class TestPushIntoAnotherDistrict:
    async def test_invisible_there_until_an_officer_of_it_accepts(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, tree: Tree
    ) -> None:
        """The attack: the host's officer names an organization of another district as
        co-host of a members-only activity, which its members then saw.  Now the activity is
        only an invitation there until an officer of that organization accepts."""
        a = await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
        assert a["co_hosts"] == [{"org_id": str(world.outside.id), "status": "pending"}]
        _, member = await member_of(db, world.outside)
        assert await _listed(client, member) == []
        assert await _listed(client, member, org_id=str(world.outside.id)) == []
        r = await client.get(f"/activities/{a['id']}", headers=member)
        assert_problem(r, 404, "not_found")
        r = await client.post(f"/activities/{a['id']}/signup", headers=member)
        assert_problem(r, 403, "not_registered")

        # The wrong people cannot accept on the organization's behalf.
        url = f"/orgs/{world.outside.id}/co-host-invitations/{a['id']}/accept"
        for headers in (world.officer_headers, world.cohost_headers, member):
            r = await client.post(url, headers=headers)
            assert_problem(r, 403, "forbidden")
        # Nor through an organization they do run, which was not invited.
        r = await _decide(client, world.host.id, a["id"], "accept", world.officer_headers)
        assert_problem(r, 404, "not_found")
        r = await _decide(client, world.cohost.id, a["id"], "accept", world.cohost_headers)
        assert_problem(r, 404, "not_found")
        r = await client.get(f"/activities/{a['id']}", headers=member)
        assert_problem(r, 404, "not_found")

        # An officer of the invited organization reads the invitation and accepts.
        officer = await _outside_officer(db, world)
        [invitation] = await _invitations(client, world.outside.id, officer)
        assert invitation["activity_id"] == a["id"]
        assert invitation["status"] == "pending"
        assert invitation["host"] == {"id": str(world.host.id), "name": world.host.name}
        assert invitation["visibility"] == "org"
        assert invitation["activity_status"] == "published"
        assert invitation["invited_by"] == str(world.officer.id)
        r = await client.post(url, headers=officer)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "accepted"
        assert r.json()["decided_at"] is not None

        assert await _listed(client, member) == [a["id"]]
        r = await client.get(f"/activities/{a['id']}", headers=member)
        assert r.status_code == 200, r.text
        assert r.json()["co_host_org_ids"] == [str(world.outside.id)]
        r = await client.post(f"/activities/{a['id']}/signup", headers=member)
        assert r.status_code == 201, r.text
        # Once: accepting again is a conflict.
        assert_problem(await client.post(url, headers=officer), 409, "invalid_transition")
        actions = [
            (e.action, e.org_id)
            for e in (
                await db.execute(AuditLog.__table__.select().where(AuditLog.object_id == a["id"]))
            ).all()
            if e.action.startswith("activity.co_host.")
        ]
        assert sorted(actions) == [
            ("activity.co_host.accepted", world.outside.id),
            ("activity.co_host.invited", world.outside.id),
        ]

    async def test_an_officer_above_the_invited_organization_may_answer(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
        r = await _decide(client, world.outside.id, a["id"], "accept", world.outsider_headers)
        assert r.status_code == 200, r.text

    async def test_declined_stays_closed(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
        officer = await _outside_officer(db, world)
        r = await _decide(client, world.outside.id, a["id"], "decline", officer)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "declined"
        r = await _decide(client, world.outside.id, a["id"], "accept", officer)
        assert_problem(r, 409, "invalid_transition")
        _, member = await member_of(db, world.outside)
        assert await _listed(client, member) == []
        # Named again in an edit, it stays declined; dropped and named anew, it is invited.
        patch = f"/activities/{a['id']}"
        body = {"co_host_org_ids": [str(world.outside.id)]}
        r = await client.patch(patch, json=body, headers=world.officer_headers)
        assert r.json()["co_hosts"] == [{"org_id": str(world.outside.id), "status": "declined"}]
        r = await client.patch(patch, json={"co_host_org_ids": []}, headers=world.officer_headers)
        assert r.json()["co_hosts"] == []
        r = await client.patch(patch, json=body, headers=world.officer_headers)
        assert r.json()["co_hosts"] == [{"org_id": str(world.outside.id), "status": "pending"}]
        assert [i["status"] for i in await _invitations(client, world.outside.id, officer)] == [
            "pending"
        ]

    async def test_members_see_accepted_co_hosts_only(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(
            client, world, co_host_org_ids=[str(world.outside.id), str(world.cohost.id)]
        )
        await accept_co_host(client, world, a["id"])
        _, member = await member_of(db, world.cohost)
        r = await client.get(f"/activities/{a['id']}", headers=member)
        assert r.status_code == 200, r.text
        assert r.json()["co_host_org_ids"] == [str(world.cohost.id)]
        assert r.json()["co_hosts"] == [{"org_id": str(world.cohost.id), "status": "accepted"}]
        r = await client.get(f"/activities/{a['id']}", headers=world.officer_headers)
        assert {(c["org_id"], c["status"]) for c in r.json()["co_hosts"]} == {
            (str(world.cohost.id), "accepted"),
            (str(world.outside.id), "pending"),
        }

    async def test_an_invited_draft_is_shown_to_its_members_only_once_published(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(
            client, world, publish=False, co_host_org_ids=[str(world.outside.id)]
        )
        officer = await _outside_officer(db, world)
        [invitation] = await _invitations(client, world.outside.id, officer, status="pending")
        assert invitation["activity_status"] == "draft"
        r = await _decide(client, world.outside.id, a["id"], "accept", officer)
        assert r.status_code == 200, r.text
        _, member = await member_of(db, world.outside)
        assert_problem(await client.get(f"/activities/{a['id']}", headers=member), 404, "not_found")
        r = await client.post(f"/activities/{a['id']}/publish", headers=world.officer_headers)
        assert r.status_code == 200, r.text
        assert await _listed(client, member) == [a["id"]]

    async def test_a_cancelled_activity_is_not_accepted(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        a = await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
        r = await client.post(
            f"/activities/{a['id']}/cancel", json={"reason": "天气"}, headers=world.officer_headers
        )
        assert r.status_code == 200, r.text
        officer = await _outside_officer(db, world)
        r = await _decide(client, world.outside.id, a["id"], "accept", officer)
        assert_problem(r, 409, "invalid_transition")


class TestWithinScope:
    async def test_an_officer_above_both_co_hosts_at_once(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, tree: Tree
    ) -> None:
        """The street's secretary runs both the host and the cohost: no invitation."""
        body = activity_body(world.host, co_host_org_ids=[str(world.cohost.id)])
        r = await client.post("/activities", json=body, headers=tree.h_s1)
        assert r.status_code == 201, r.text
        assert r.json()["co_hosts"] == [{"org_id": str(world.cohost.id), "status": "accepted"}]
        r = await client.post(f"/activities/{r.json()['id']}/publish", headers=tree.h_s1)
        assert r.status_code == 200, r.text
        _, member = await member_of(db, world.cohost)
        assert await _listed(client, member) == [r.json()["id"]]
        pending = await _invitations(
            client, world.cohost.id, world.cohost_headers, status="pending"
        )
        assert pending == []

    async def test_an_admin_names_anyone(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World, tree: Tree
    ) -> None:
        body = activity_body(world.host, co_host_org_ids=[str(world.outside.id)])
        r = await client.post("/activities", json=body, headers=tree.h_admin)
        assert r.status_code == 201, r.text
        assert r.json()["co_hosts"][0]["status"] == "accepted"


class TestInvitationsList:
    async def test_only_for_officers_of_the_organization_or_above(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
        _, member = await member_of(db, world.outside)
        for headers in (member, world.officer_headers):
            r = await client.get(f"/orgs/{world.outside.id}/co-host-invitations", headers=headers)
            assert_problem(r, 403, "forbidden")
        assert len(await _invitations(client, world.outside.id, world.outsider_headers)) == 1

    @pytest.mark.parametrize("params", [{"status": "maybe"}, {"cursor": "bm90LWEtY3Vyc29y"}])
    async def test_bad_filters_are_422(
        self, client: httpx.AsyncClient, world: World, params: dict[str, str]
    ) -> None:
        r = await client.get(
            f"/orgs/{world.outside.id}/co-host-invitations",
            headers=world.outsider_headers,
            params=params,
        )
        assert r.status_code == 422, r.text

    async def test_pages_oldest_first(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        ids = [
            (await create_activity(client, world, co_host_org_ids=[str(world.outside.id)]))["id"]
            for _ in range(3)
        ]
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            r = await client.get(
                f"/orgs/{world.outside.id}/co-host-invitations",
                headers=world.outsider_headers,
                params=params,
            )
            assert r.status_code == 200, r.text
            seen += [i["activity_id"] for i in r.json()["items"]]
            if r.json()["next_cursor"] is None:
                break
            params["cursor"] = r.json()["next_cursor"]
        assert sorted(seen) == sorted(ids)
        assert len(seen) == 3


class TestConcurrentAnswers:
    @pytest.mark.postgres_only
    @pytest.mark.committing
    async def test_accept_and_decline_at_once_one_wins(
        self, client: httpx.AsyncClient, db: AsyncSession, world: World
    ) -> None:
        officer = await _outside_officer(db, world)
        for _ in range(5):
            a = await create_activity(client, world, co_host_org_ids=[str(world.outside.id)])
            answers = await asyncio.gather(
                _decide(client, world.outside.id, a["id"], "accept", officer),
                _decide(client, world.outside.id, a["id"], "decline", world.outsider_headers),
                _decide(client, world.outside.id, a["id"], "accept", world.outsider_headers),
            )
            codes = sorted(r.status_code for r in answers)
            assert codes == [200, 409, 409], [r.text for r in answers]
            [won] = [r.json()["status"] for r in answers if r.status_code == 200]
            listed = await _invitations(client, world.outside.id, officer)
            assert [i["status"] for i in listed if i["activity_id"] == a["id"]] == [won]
