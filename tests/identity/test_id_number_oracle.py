"""PATCH /me as an oracle: a member tries ID numbers to learn whether one belongs to a Party
member.  The answer must be the same for a number another account holds and for a free one;
the holder's officers learn of the attempt through the audit log; guesses are few a day."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.crypto import blind_index, decrypt
from app.models.kit import AuditLog
from app.models.user import IdNumberClaim, User
from tests.fixtures.factories import login, make_officer, make_org, make_user
from tests.fixtures.problems import assert_problem
from tests.identity.helpers import count_rows, fresh_user, valid_id_number

TAKEN = valid_id_number("33020319900101123")
FREE = valid_id_number("33020319850315002")
ANOTHER_FREE = valid_id_number("33020319950505002")


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A profile without what differs between two numbers anyway (their masked digits)."""
    return {**body, "id_number_masked": len(body["id_number_masked"] or "")}


async def holder_with_number(db: AsyncSession, client: httpx.AsyncClient) -> tuple[User, Any]:
    district = await make_org(db, name="奉化区")
    branch = await make_org(db, district, name="力邦村党总支")
    holder = await make_user(db, name="王五", record_org_id=branch.id)
    r = await client.patch("/me", json={"id_number": TAKEN}, headers=await login(db, holder))
    assert r.status_code == 200
    return holder, branch


class TestTheAttacker:
    async def test_a_taken_number_is_answered_like_a_free_one(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        app: FastAPI,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(app.state.settings, "id_number_changes_per_day", 10)
        await holder_with_number(db, client)
        # Two attackers alike, one tries the taken number, the other a free one.
        answers = []
        for number in (TAKEN, FREE):
            attacker = await make_user(db, name="张三", phone=f"1370000{number[-4:]}")
            headers = await login(db, attacker)
            patched = await client.patch(
                "/me", json={"id_number": number, "employer": "某公司"}, headers=headers
            )
            read = await client.get("/me", headers=headers)
            answers.append((patched, read, attacker))
        (taken_patch, taken_read, a1), (free_patch, free_read, a2) = answers
        assert taken_patch.status_code == free_patch.status_code == 200
        assert taken_read.status_code == free_read.status_code == 200
        assert taken_patch.headers["content-type"] == free_patch.headers["content-type"]
        for taken, free, who in ((taken_patch, free_patch, None), (taken_read, free_read, None)):
            t, f = taken.json(), free.json()
            assert set(t) == set(f)
            for body, attacker in ((t, a1), (f, a2)):
                assert body["id"] == str(attacker.id)
                assert body["employer"] == "某公司"
            assert t["id_number_masked"] == "3302**********" + TAKEN[-4:]
            assert f["id_number_masked"] == "3302**********" + FREE[-4:]
            assert who is None
        # Sending the same number again answers the same way too.
        again = await client.patch("/me", json={"id_number": TAKEN}, headers=await login(db, a1))
        assert again.status_code == 200
        assert again.json()["id_number_masked"] == "3302**********" + TAKEN[-4:]

    async def test_the_number_is_kept_aside_and_the_holder_keeps_it(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        holder, _ = await holder_with_number(db, client)
        attacker = await make_user(db)
        r = await client.patch("/me", json={"id_number": TAKEN}, headers=await login(db, attacker))
        assert r.status_code == 200
        stored = await fresh_user(sessionmaker, attacker)
        assert (stored.id_number_enc, stored.id_number_index) == (None, None)
        held = await fresh_user(sessionmaker, holder)
        assert held.id_number_index == blind_index(TAKEN, context="users.id_number")
        async with sessionmaker() as s:
            claim = (await s.execute(select(IdNumberClaim))).scalar_one()
        assert (claim.user_id, claim.holder_id) == (attacker.id, holder.id)
        assert TAKEN.encode() not in claim.id_number_enc
        assert decrypt(claim.id_number_enc, context="users.id_number") == TAKEN
        # The holder's own profile is as it was.
        mine = await client.get("/me", headers=await login(db, holder))
        assert mine.json()["id_number_masked"] == "3302**********" + TAKEN[-4:]

    async def test_the_holders_officers_see_it_in_the_audit_log_without_the_number(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
    ) -> None:
        holder, branch = await holder_with_number(db, client)
        officer = await make_officer(db, branch)
        attacker = await make_user(db, name="张三")
        r = await client.patch("/me", json={"id_number": TAKEN}, headers=await login(db, attacker))
        assert r.status_code == 200
        log = await client.get(
            f"/orgs/{branch.id}/audit-log",
            params={"action": "profile.id_number_claimed"},
            headers=await login(db, officer),
        )
        assert log.status_code == 200, log.text
        entries = log.json()["items"]
        assert len(entries) == 1
        entry = entries[0]
        assert entry["object_type"] == "user"
        assert entry["object_id"] == str(holder.id)
        assert entry["actor_id"] == str(attacker.id)
        assert entry["org"]["id"] == str(branch.id)
        for fragment in (TAKEN, TAKEN[:6], TAKEN[6:14], TAKEN[-4:]):
            assert fragment not in log.text
        # A free number leaves no such entry.
        other = await make_user(db)
        await client.patch("/me", json={"id_number": FREE}, headers=await login(db, other))
        async with db.begin_nested():
            claimed = (
                (
                    await db.execute(
                        select(AuditLog).where(AuditLog.action == "profile.id_number_claimed")
                    )
                )
                .scalars()
                .all()
            )
        assert len(claimed) == 1

    async def test_guesses_are_few_a_day_whatever_the_answer(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        app: FastAPI,
    ) -> None:
        assert app.state.settings.id_number_changes_per_day == 3
        await holder_with_number(db, client)
        attacker = await make_user(db)
        headers = await login(db, attacker)
        for number in (FREE, TAKEN, ANOTHER_FREE):
            r = await client.patch("/me", json={"id_number": number}, headers=headers)
            assert r.status_code == 200
        for number in (TAKEN, FREE):
            r = await client.patch("/me", json={"id_number": number}, headers=headers)
            assert_problem(r, 429, "too_many_requests")
            assert 1 <= int(r.headers["retry-after"]) <= 86400
        # The refused requests changed nothing; other fields may still change.
        stored = await fresh_user(sessionmaker, attacker)
        assert stored.id_number_index == blind_index(ANOTHER_FREE, context="users.id_number")
        assert await count_rows(sessionmaker, IdNumberClaim) == 0
        r = await client.patch("/me", json={"employer": "某单位"}, headers=headers)
        assert r.status_code == 200
        # Clearing the number is not a guess.
        r = await client.patch("/me", json={"id_number": None}, headers=headers)
        assert r.status_code == 200
        # Each account has its own count.
        other = await make_user(db)
        r = await client.patch("/me", json={"id_number": TAKEN}, headers=await login(db, other))
        assert r.status_code == 200

    async def test_a_claim_goes_when_the_member_enters_another_number_or_clears_it(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        await holder_with_number(db, client)
        member = await make_user(db)
        headers = await login(db, member)
        await client.patch("/me", json={"id_number": TAKEN}, headers=headers)
        assert await count_rows(sessionmaker, IdNumberClaim) == 1
        r = await client.patch("/me", json={"id_number": None}, headers=headers)
        assert r.json()["id_number_masked"] is None
        assert await count_rows(sessionmaker, IdNumberClaim) == 0
        await client.patch("/me", json={"id_number": TAKEN}, headers=headers)
        r = await client.patch("/me", json={"id_number": FREE}, headers=headers)
        assert r.json()["id_number_masked"] == "3302**********" + FREE[-4:]
        assert await count_rows(sessionmaker, IdNumberClaim) == 0
        stored = await fresh_user(sessionmaker, member)
        assert stored.id_number_index == blind_index(FREE, context="users.id_number")


@pytest.mark.postgres_only
@pytest.mark.committing
class TestConcurrentNumbers:
    async def test_one_free_number_entered_by_several_at_once(
        self,
        client: httpx.AsyncClient,
        db: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        members = [await make_user(db) for _ in range(6)]
        headers = [await login(db, m) for m in members]
        answers = await asyncio.gather(
            *(client.patch("/me", json={"id_number": FREE}, headers=h) for h in headers)
        )
        # All answered alike; exactly one account holds the number, the others claim it.
        assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
        assert all(
            r.json()["id_number_masked"] == answers[0].json()["id_number_masked"] for r in answers
        )
        async with sessionmaker() as s:
            holders = (
                (
                    await s.execute(
                        select(User.id).where(
                            User.id_number_index == blind_index(FREE, context="users.id_number")
                        )
                    )
                )
                .scalars()
                .all()
            )
            claims = (await s.execute(select(IdNumberClaim))).scalars().all()
        assert len(holders) == 1
        assert sorted(str(c.user_id) for c in claims) == sorted(
            str(m.id) for m in members if m.id != holders[0]
        )
        assert {c.holder_id for c in claims} == {holders[0]}
