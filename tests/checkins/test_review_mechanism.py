"""The review mechanism (app/review) itself, with the check-in as its kind: a verdict per id in
the order given, and a kind's `on_decided` hook called once with exactly the records decided,
inside the decision's transaction."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import review
from app.authz import subtree
from app.checkins.reviewable import CHECKINS
from app.models.checkin import Checkin
from app.models.kit import AuditLog
from app.models.organization import Organization
from app.models.user import User
from tests.fixtures.factories import make_org, make_user


async def pending_checkin(db: AsyncSession, org: Organization) -> tuple[uuid.UUID, User]:
    member = await make_user(db, name="李四")
    checkin = Checkin(user_id=member.id, org_id=org.id, status="pending")
    db.add(checkin)
    await db.commit()
    return checkin.id, member


async def test_verdicts_and_the_on_decided_hook(
    db: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    district = await make_org(db, kind="district")
    regional = await make_org(db, district, kind="regional")
    elsewhere = await make_org(db, await make_org(db, kind="district"), kind="regional")
    officer = await make_user(db, name="王书记")
    first, first_member = await pending_checkin(db, regional)
    second, second_member = await pending_checkin(db, regional)
    outside, _ = await pending_checkin(db, elsewhere)
    unknown = uuid.uuid4()

    calls: list[tuple[str, list[review.Changed], int]] = []

    async def on_decided(
        session: AsyncSession, to_state: str, changed: Sequence[review.Changed]
    ) -> None:
        # Inside the decision's transaction: the records are in their new state there, and
        # their audit entries are pending in the same session.
        states = await session.scalars(
            select(Checkin.status).where(Checkin.id.in_([c.id for c in changed]))
        )
        entries = [e for e in session.new if isinstance(e, AuditLog)]
        assert set(states) == {to_state}
        calls.append((to_state, sorted(changed), len(entries)))

    kind = dataclasses.replace(CHECKINS, on_decided=on_decided)
    ids = [unknown, second, outside, first]
    async with sessionmaker() as session, session.begin():
        verdicts = await review.decide_batch(
            session,
            kind,
            actor_id=officer.id,
            scope=subtree(district.path),
            ids=ids,
            decision="approve",
            comment=None,
        )
    assert verdicts == [
        review.Verdict(unknown, False, None, "not_found"),
        review.Verdict(second, True, "approved", None),
        review.Verdict(outside, False, None, "not_found"),
        review.Verdict(first, True, "approved", None),
    ]
    decided = sorted(
        [
            review.Changed(first, regional.id, first_member.id),
            review.Changed(second, regional.id, second_member.id),
        ]
    )
    assert calls == [("approved", decided, 2)]

    # Nothing decided (no longer pending): no call.
    async with sessionmaker() as session, session.begin():
        verdicts = await review.decide_batch(
            session,
            kind,
            actor_id=officer.id,
            scope=subtree(district.path),
            ids=[first],
            decision="reject",
            comment="理由",
        )
    assert verdicts == [review.Verdict(first, False, "approved", "invalid_transition")]
    assert len(calls) == 1
