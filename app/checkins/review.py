"""Officers review check-ins: the queue of their subtree, a decision on one, a batch with a
result per id.  The decisions are the review mechanism's (app/review) applied to `CHECKINS`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app import review
from app.authz import Scope
from app.checkins import repository as repo
from app.checkins.reviewable import CHECKINS, Decision
from app.checkins.schemas import CheckinQueueItem, ReviewResponse
from app.checkins.shaping import queue_item
from app.core.pagination import Page, PageParams, page_of
from app.models.enums import CheckinStatus
from app.models.organization import Organization
from app.models.user import User


async def queue(
    session: AsyncSession, org: Organization, status: CheckinStatus | None, params: PageParams
) -> Page[CheckinQueueItem]:
    rows = await repo.queue_page(session, org.path, status, params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[queue_item(r) for r in items], next_cursor=cursor)


async def decide(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    checkin_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
    if_match: str | None = None,
) -> CheckinQueueItem:
    """Approve or reject one pending check-in in the officer's subtree.

    Outside the subtree (or unknown): 404; the officer's own, pending: 403
    `review_own_forbidden`; changed since the `if_match` ETag was read: 412; not pending
    (also: lost a race): 409."""
    return await review.decide_one(
        session,
        CHECKINS,
        actor_id=actor.id,
        scope=scope,
        object_id=checkin_id,
        decision=decision,
        comment=comment,
        if_match=if_match,
    )


async def decide_many(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: Decision,
    comment: str | None,
    if_match: Mapping[uuid.UUID, str] | None = None,
) -> ReviewResponse:
    """A batch: a result per id, in the order given; one bad id does not sink the others.
    Rejecting needs a reason (422); a record changed since its `if_match` ETag was read gets
    `precondition_failed`."""
    verdicts = await review.decide_batch(
        session,
        CHECKINS,
        actor_id=actor.id,
        scope=scope,
        ids=ids,
        decision=decision,
        comment=comment,
        if_match=if_match,
    )
    return review.batch_response(ReviewResponse, verdicts)
