"""双岗位: the state machine of a member's contribution records, and their review.

States: pending → approved | rejected | returned | withdrawn; returned → pending (edited and
resubmitted) | withdrawn.  Anything else is 409 `invalid_transition`.  Every change is one
conditional UPDATE (… WHERE status = :from), so that of two concurrent actors exactly one
wins; decisions and submissions go to the audit log and the outbox in the same transaction.
What a record must satisfy when it is logged or edited is in `rules`.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import review
from app.contributions import repository as repo
from app.contributions import rules, shaping
from app.contributions.review import CONTRIBUTIONS
from app.contributions.rules import EDITABLE
from app.contributions.schemas import (
    ContributionCreate,
    ContributionRead,
    ContributionUpdate,
    OrgRef,
    PostTotal,
    SummaryCell,
    SummaryRead,
    half_hours_of,
)
from app.core import clock
from app.core.audit import audit
from app.core.errors import InvalidTransition, NotFound, ValidationFailed
from app.core.i18n import text
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import Post
from app.models.contribution import Contribution, ContributionStatus
from app.models.user import User

OBJECT_TYPE = CONTRIBUTIONS.object_type


# --- members ----------------------------------------------------------------------------------


async def submit(
    session: AsyncSession, user: User, data: ContributionCreate, *, max_age_days: int
) -> ContributionRead:
    """Log a pending record (`max_age_days`: how far back a day may be)."""
    rules.check_category(data.post, data.category)
    rules.check_day(data.occurred_on, max_age_days)
    org_name = await rules.check_org(session, user, data.org_id)
    half_hours = half_hours_of(data.hours)
    await rules.check_daily_limit(session, user.id, data.occurred_on, half_hours)
    now = clock.now()
    record = Contribution(
        id=uuid.uuid4(),
        user_id=user.id,
        org_id=data.org_id,
        post=data.post.value,
        category=data.category,
        title=data.title,
        description=data.description or None,
        occurred_on=data.occurred_on,
        half_hours=half_hours,
        status=ContributionStatus.pending.value,
        possible_duplicate=await repo.has_credit(session, user.id, data.occurred_on),
        attachment_count=0,
        submitted_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    await session.flush()
    review.record_change(
        session,
        CONTRIBUTIONS,
        review.Changed(record.id, record.org_id, user.id),
        actor_id=user.id,
        from_state=None,
        to_state=ContributionStatus.pending,
    )
    return ContributionRead(
        id=record.id,
        source="manual",
        status=ContributionStatus.pending,
        post=data.post,
        category=record.category,
        title=record.title,
        description=record.description,
        occurred_on=record.occurred_on,
        hours=shaping.hours(half_hours),
        org=OrgRef(id=record.org_id, name=org_name),
        attachment_count=0,
        submitted_at=now,
        decided_at=None,
        decision_comment=None,
    )


async def get_mine(
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID
) -> ContributionRead:
    row = await repo.mine_one(session, user_id, record_id)
    if row is None:
        raise NotFound()
    return shaping.read(row)


async def list_mine(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: ContributionStatus | None,
    post: Post | None,
    year: int | None,
    params: PageParams,
) -> Page[ContributionRead]:
    rows = await repo.mine_page(
        session,
        user_id,
        status=status.value if status else None,
        post=post.value if post else None,
        year=year,
        params=params,
    )
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[shaping.read(r) for r in items], next_cursor=cursor)


async def summary(session: AsyncSession, user_id: uuid.UUID, year: int) -> SummaryRead:
    rows = await repo.summary(session, user_id, year)
    cells = [
        SummaryCell(
            post=r.post, status=r.status, count=r.records, hours=shaping.hours(r.half_hours)
        )
        for r in sorted(rows, key=lambda r: (r.post, r.status))
    ]
    totals = []
    for post in Post:
        approved = [c for c in cells if c.post == post and c.status == ContributionStatus.approved]
        totals.append(
            PostTotal(
                post=post,
                approved_hours=sum(c.hours for c in approved),
                approved_count=sum(c.count for c in approved),
            )
        )
    return SummaryRead(year=year, items=cells, totals=totals)


async def update(
    session: AsyncSession,
    user: User,
    record_id: uuid.UUID,
    data: ContributionUpdate,
    *,
    max_age_days: int,
) -> ContributionRead:
    """Edit the member's pending or returned record; a returned one is resubmitted."""
    record = await repo.own(session, user.id, record_id, lock=True)
    if record is None:
        raise NotFound()
    from_state = record.status
    if from_state not in EDITABLE:
        raise InvalidTransition()
    changes = data.model_dump(exclude_unset=True)
    for name in ("post", "category", "title", "occurred_on", "hours", "org_id"):
        if name in changes and changes[name] is None:
            raise ValidationFailed(name, text("不能为空", "May not be null"))
    post = str(changes.get("post", record.post))
    category = changes.get("category", record.category)
    occurred_on: date = changes.get("occurred_on", record.occurred_on)
    half_hours = half_hours_of(changes["hours"]) if "hours" in changes else record.half_hours
    org_id: uuid.UUID = changes.get("org_id", record.org_id)
    if "post" in changes or "category" in changes:
        rules.check_category(post, category)
    if "occurred_on" in changes:
        rules.check_day(occurred_on, max_age_days)
    if "org_id" in changes:
        await rules.check_org(session, user, org_id)
    if occurred_on != record.occurred_on or half_hours > record.half_hours:
        await rules.check_daily_limit(session, user.id, occurred_on, half_hours, exclude=record.id)
    values: dict[str, Any] = {
        "post": post,
        "category": category,
        "title": changes.get("title", record.title),
        "description": changes.get("description", record.description) or None,
        "occurred_on": occurred_on,
        "half_hours": half_hours,
        "org_id": org_id,
        "status": ContributionStatus.pending.value,
        "possible_duplicate": await repo.has_credit(session, user.id, occurred_on),
    }
    if from_state == ContributionStatus.returned:
        values["submitted_at"] = clock.now()
    if not await repo.change_own(session, record.id, user.id, from_state, values):
        raise InvalidTransition()  # decided or withdrawn meanwhile
    if from_state == ContributionStatus.returned:
        review.record_change(
            session,
            CONTRIBUTIONS,
            review.Changed(record.id, org_id, user.id),
            actor_id=user.id,
            from_state=from_state,
            to_state=ContributionStatus.pending,
            comment="resubmitted",
        )
    else:
        audit(
            session,
            action="contribution.updated",
            object_type=OBJECT_TYPE,
            object_id=record.id,
            org_id=org_id,
            actor_id=user.id,
            from_state=from_state,
            to_state=from_state,
        )
    return await get_mine(session, user.id, record.id)


async def withdraw(session: AsyncSession, user: User, record_id: uuid.UUID) -> ContributionRead:
    record = await repo.own(session, user.id, record_id, lock=True)
    if record is None:
        raise NotFound()
    from_state = record.status
    if from_state not in EDITABLE:
        raise InvalidTransition()
    values = {"status": ContributionStatus.withdrawn.value}
    if not await repo.change_own(session, record.id, user.id, from_state, values):
        raise InvalidTransition()
    review.record_change(
        session,
        CONTRIBUTIONS,
        review.Changed(record.id, record.org_id, user.id),
        actor_id=user.id,
        from_state=from_state,
        to_state=ContributionStatus.withdrawn,
    )
    return await get_mine(session, user.id, record.id)
