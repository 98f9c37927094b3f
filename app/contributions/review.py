"""Officers review contributions: the queue of their subtree, a decision on one (approve,
reject, or return to the member for changes), a batch with a result per id.

The contribution as a reviewable record (app/review) is `CONTRIBUTIONS`: pending → approved |
rejected | returned by an officer; a returned record goes back to pending when its member edits
it.  Rejecting and returning need a reason.  Activity credits are facts, approved from the
start: they appear in the queue but are never decided.  An approval that would bring the
member's approved hours of the day past 24 is refused (`rules.admit_approvals`, 422
`daily_hours_exceeded`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app import review
from app.authz import Scope
from app.contributions import repository as repo
from app.contributions import review_repository as queue_repo
from app.contributions import rules
from app.contributions.review_repository import QueueRow
from app.contributions.schemas import (
    ContributionQueueItem,
    MemberCard,
    ReviewResponse,
)
from app.contributions.shaping import record_fields
from app.core.crypto import mask_phone
from app.core.pagination import Page, PageParams, page_of
from app.models.contribution import Contribution, ContributionStatus
from app.models.organization import Organization
from app.models.user import User

Decision = Literal["approve", "reject", "return"]


def _queue_item(row: QueueRow) -> ContributionQueueItem:
    return ContributionQueueItem(
        **record_fields(row),
        member=MemberCard(
            id=row.user_id, name=row.user_name, phone_masked=mask_phone(row.user_phone)
        ),
        possible_duplicate=bool(row.possible_duplicate),
        decided_by=row.decided_by,
        etag=None if row.version is None else review.format_etag([row.version]),
    )


async def _load(session: AsyncSession, record_id: uuid.UUID) -> ContributionQueueItem | None:
    row = await queue_repo.queue_one(session, record_id)
    return None if row is None else _queue_item(row)


CONTRIBUTIONS: review.Reviewable[ContributionQueueItem] = review.Reviewable(
    object_type="contribution",
    table=Contribution,
    id=Contribution.id,
    status=Contribution.status,
    owner=Contribution.user_id,
    org=Contribution.org_id,
    decided_at=Contribution.decided_at,
    decided_by=Contribution.decided_by,
    decision_comment=Contribution.decision_comment,
    updated_at=Contribution.updated_at,
    # Every edit of the record by its member (fields, evidence added) raises its version.
    versions=(Contribution.version,),
    decisions={
        "approve": ContributionStatus.approved.value,
        "reject": ContributionStatus.rejected.value,
        "return": ContributionStatus.returned.value,
    },
    reason_required=frozenset({"reject", "return"}),
    reason_missing=("驳回或退回时须填写理由", "A reason is required to reject or return"),
    load=_load,
    # Approved hours per member and day never pass 24 (all sources): see rules.
    admit=rules.admit_approvals,
)


async def queue(
    session: AsyncSession, org: Organization, status: ContributionStatus | None, params: PageParams
) -> Page[ContributionQueueItem]:
    rows = await queue_repo.queue_page(session, org.path, status.value if status else None, params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_queue_item(r) for r in items], next_cursor=cursor)


async def decide(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    record_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
    if_match: str | None = None,
) -> ContributionQueueItem:
    """Decide one pending record in the officer's subtree.

    Outside the subtree (or unknown): 404; the officer's own, pending: 403
    `review_own_forbidden`; changed since the `if_match` ETag was read: 412; not pending
    (also: lost a race): 409."""
    return await review.decide_one(
        session,
        CONTRIBUTIONS,
        actor_id=actor.id,
        scope=scope,
        object_id=record_id,
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
    """A batch: a result per id, in the order given; one bad id does not sink the others; a
    record changed since its `if_match` ETag was read gets `precondition_failed`."""
    verdicts = await review.decide_batch(
        session,
        CONTRIBUTIONS,
        actor_id=actor.id,
        scope=scope,
        ids=ids,
        decision=decision,
        comment=comment,
        if_match=if_match,
    )
    return review.batch_response(ReviewResponse, verdicts)
