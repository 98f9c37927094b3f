"""The check-in as a record officers review (app/review): its table, its decisions and what an
officer sees of one after deciding it.

States: pending → approved | rejected (an officer's decision) | withdrawn (its member);
approved → left (its member).  Events and audit actions are `checkin.<state>`, `submitted`
for pending.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.checkins import repository as repo
from app.checkins.schemas import CheckinQueueItem
from app.checkins.shaping import queue_item
from app.models.checkin import Checkin
from app.models.enums import CheckinStatus
from app.models.user import User
from app.review import Reviewable

Decision = Literal["approve", "reject"]


async def _load(session: AsyncSession, checkin_id: uuid.UUID) -> CheckinQueueItem | None:
    row = await repo.queue_one(session, checkin_id)
    return None if row is None else queue_item(row)


CHECKINS: Reviewable[CheckinQueueItem] = Reviewable(
    object_type="checkin",
    table=Checkin,
    id=Checkin.id,
    status=Checkin.status,
    owner=Checkin.user_id,
    org=Checkin.org_id,
    decided_at=Checkin.decided_at,
    decided_by=Checkin.decided_by,
    decision_comment=Checkin.decision_comment,
    updated_at=Checkin.updated_at,
    # A check-in is decided on the member's profile as much as on the check-in itself (the
    # officer reads name, party status, employer and record organization from the queue): an
    # edit of either makes a new ETag.
    versions=(
        Checkin.version,
        select(User.version).where(User.id == Checkin.user_id).scalar_subquery(),
    ),
    decisions={
        "approve": CheckinStatus.approved.value,
        "reject": CheckinStatus.rejected.value,
    },
    reason_required=frozenset({"reject"}),
    reason_missing=("驳回时须填写理由", "A reason is required to reject"),
    load=_load,
)
