"""Officers confirm or reject late check-ins: the queue of their subtree's activities and a
batch decision with a result per id, through the one review mechanism (app/review).

An attendance record as a reviewable record is `ATTENDANCE`: pending → present (`confirm`:
the hours are credited then, by the rules of `hours`) | absent (`reject`, with a reason).  The
mechanism's own-record rule holds: an officer never confirms their own check-in (403
`review_own_forbidden`, or that code for its id in a batch).  Events and audit actions are
`activity_attendance.present` / `.absent`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app import review
from app.activities import hours
from app.activities.repository import attendance as repo
from app.activities.schemas import (
    AttendanceActivity,
    AttendanceMember,
    AttendanceQueueItem,
    AttendanceReviewResponse,
)
from app.authz import Scope
from app.core.crypto import mask_phone
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import Attendance, AttendanceMethod, AttendanceStatus
from app.models.organization import Organization


def _item(row: repo.QueueRow) -> AttendanceQueueItem:
    return AttendanceQueueItem(
        id=row.id,
        activity=AttendanceActivity(
            id=row.activity_id,
            title=row.activity_title,
            starts_at=row.activity_starts_at,
            ends_at=row.activity_ends_at,
        ),
        org_id=row.org_id,
        member=AttendanceMember(
            id=row.user_id, name=row.user_name, phone_masked=mask_phone(row.user_phone)
        ),
        status=AttendanceStatus(row.status),
        method=AttendanceMethod(row.method),
        attended_at=row.attended_at,
        recorded_at=row.recorded_at,
        delay_seconds=row.delay_seconds,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        decision_comment=row.decision_comment,
    )


async def _load(session: AsyncSession, attendance_id: uuid.UUID) -> AttendanceQueueItem | None:
    row = await repo.queue_one(session, attendance_id)
    return None if row is None else _item(row)


async def _credit_confirmed(
    session: AsyncSession, to_state: str, changed: Sequence[review.Changed]
) -> None:
    """Credit the hours of check-ins just confirmed (time counted once, 24 hours a day)."""
    if to_state != AttendanceStatus.present.value:
        return
    for attendance, activity in await repo.decided(session, [c.id for c in changed]):
        await hours.credit(session, activity, attendance.user_id)


ATTENDANCE: review.Reviewable[AttendanceQueueItem] = review.Reviewable(
    object_type="activity_attendance",
    table=Attendance,
    id=Attendance.id,
    status=Attendance.status,
    owner=Attendance.user_id,
    org=Attendance.org_id,
    decided_at=Attendance.decided_at,
    decided_by=Attendance.decided_by,
    decision_comment=Attendance.decision_comment,
    updated_at=Attendance.updated_at,
    # A check-in is never edited once recorded (a repeat answers the same record), so a
    # decision needs no `If-Match` and the record's ETag has no versions.
    versions=(),
    decisions={
        "confirm": AttendanceStatus.present.value,
        "reject": AttendanceStatus.absent.value,
    },
    reason_required=frozenset({"reject"}),
    reason_missing=("驳回签到时须填写理由", "A reason is required to reject a check-in"),
    load=_load,
    on_decided=_credit_confirmed,
)


async def queue(
    session: AsyncSession, org: Organization, status: AttendanceStatus | None, params: PageParams
) -> Page[AttendanceQueueItem]:
    """Attendance records of activities hosted in the organization's subtree, oldest first."""
    rows = await repo.queue_page(session, org.path, status.value if status else None, params)
    items, cursor = page_of(rows, params, repo.queue_key)
    return Page(items=[_item(r) for r in items], next_cursor=cursor)


async def decide_many(
    session: AsyncSession,
    actor_id: uuid.UUID,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: str,
    comment: str | None,
) -> AttendanceReviewResponse:
    """A batch: a result per id, in the order given; one bad id does not sink the others.
    Rejecting needs a reason (422)."""
    verdicts = await review.decide_batch(
        session,
        ATTENDANCE,
        actor_id=actor_id,
        scope=scope,
        ids=ids,
        decision=decision,
        comment=comment,
    )
    return review.batch_response(AttendanceReviewResponse, verdicts)
