"""The life of an activity, run by the officers of its host and above: create a draft, edit
it, publish it before the start, cancel it (with every sign-up), complete it once started.
Each step is audited; publish, cancel and complete also go out as events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import access, co_hosting, signups
from app.activities.repository import activities as repo
from app.activities.repository import seats
from app.activities.schemas import ActivityCreate, ActivityRead, ActivityUpdate
from app.activities.views import to_read
from app.authz import Principal
from app.authz import activities as policy
from app.core import clock
from app.core.audit import audit
from app.core.errors import AppError, InvalidTransition, ValidationFailed
from app.core.i18n import text
from app.core.outbox import record_event
from app.models.activity import Activity, ActivityStatus
from app.orgs.tree import district_of

OBJECT = "activity"


def _check_times(starts: datetime, ends: datetime, deadline: datetime | None) -> None:
    if ends <= starts:
        raise ValidationFailed(
            "ends_at", text("结束时间必须晚于开始时间", "ends_at must be after starts_at")
        )
    if deadline is not None and deadline > starts:
        raise ValidationFailed(
            "signup_deadline",
            text("报名截止时间不能晚于开始时间", "signup_deadline must not be after starts_at"),
        )


async def _check_co_hosts(
    session: AsyncSession, org_ids: Sequence[uuid.UUID], host_id: uuid.UUID
) -> dict[uuid.UUID, str]:
    """The named co-hosts (id → path), sorted, once each."""
    unique = sorted(set(org_ids))
    if host_id in unique:
        raise ValidationFailed(
            "co_host_org_ids",
            text("协办组织不能包含主办组织", "co_host_org_ids must not include the host"),
        )
    paths = await repo.org_paths(session, unique)
    if set(unique) - set(paths):
        raise ValidationFailed(
            "co_host_org_ids",
            text("协办组织不存在", "Unknown organization in co_host_org_ids"),
        )
    return {org: paths[org] for org in unique}


async def create_activity(
    session: AsyncSession, principal: Principal, data: ActivityCreate
) -> ActivityRead:
    """A draft hosted by `data.org_id`, for an officer of it or above."""
    host_path = await repo.host_path(session, data.org_id)
    if host_path is None:
        raise ValidationFailed("org_id", text("主办组织不存在", "Unknown organization"))
    await policy.require_host_officer(session, principal, host_path)
    _check_times(data.starts_at, data.ends_at, data.signup_deadline)
    co_hosts = await _check_co_hosts(session, data.co_host_org_ids, data.org_id)
    activity = Activity(
        org_id=data.org_id,
        district_id=(await district_of(session, host_path)).id,
        title=data.title,
        description=data.description,
        category=data.category.value,
        starts_at=data.starts_at,
        ends_at=data.ends_at,
        location_name=data.location.name,
        location_address=data.location.address,
        lat=data.location.lat,
        lng=data.location.lng,
        radius_m=data.location.radius_m,
        capacity=data.capacity,
        signup_deadline=data.signup_deadline,
        visibility=data.visibility.value,
        service_hours=data.service_hours,
        post=data.post.value,
        status=ActivityStatus.draft.value,
        confirmed_count=0,
        waitlist_count=0,
        waitlist_seq=0,
        created_by=principal.user_id,
    )
    session.add(activity)
    await session.flush()
    audit(
        session,
        action="activity.create",
        object_type=OBJECT,
        object_id=activity.id,
        org_id=activity.org_id,
        actor_id=principal.user_id,
        to_state=activity.status,
    )
    await co_hosting.name(session, principal, activity, co_hosts)
    return to_read(activity, await repo.co_hosts(session, activity.id), None)


_NOT_NULL = (
    "co_host_org_ids",
    "title",
    "description",
    "category",
    "starts_at",
    "ends_at",
    "location",
    "visibility",
    "service_hours",
    "post",
)


async def update_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID, data: ActivityUpdate
) -> ActivityRead:
    """Edit a draft or published activity; a raised capacity promotes from the waitlist."""
    activity = await access.for_officer(session, principal, activity_id, lock=True)
    if activity.status not in (ActivityStatus.draft.value, ActivityStatus.published.value):
        raise InvalidTransition()
    changes = data.model_dump(exclude_unset=True)
    for name in _NOT_NULL:
        if name in changes and changes[name] is None:
            raise ValidationFailed(name, text("不能为空", "must not be null"))
    starts = data.starts_at or activity.starts_at
    ends = data.ends_at or activity.ends_at
    deadline = data.signup_deadline if "signup_deadline" in changes else activity.signup_deadline
    _check_times(starts, ends, deadline)
    co_hosts: dict[uuid.UUID, str] | None = None
    if data.co_host_org_ids is not None:
        co_hosts = await _check_co_hosts(session, data.co_host_org_ids, activity.org_id)
    capacity_raised = False
    if "capacity" in changes:
        if data.capacity is not None and data.capacity < activity.confirmed_count:
            raise AppError("capacity_below_confirmed")
        old = activity.capacity
        capacity_raised = data.capacity is None or (old is not None and data.capacity > old)
        activity.capacity = data.capacity
    # Everything is checked: from here on, write.
    activity.starts_at, activity.ends_at, activity.signup_deadline = starts, ends, deadline
    if data.title is not None:
        activity.title = data.title
    if data.description is not None:
        activity.description = data.description
    if data.category is not None:
        activity.category = data.category.value
    if data.location is not None:
        activity.location_name = data.location.name
        activity.location_address = data.location.address
        activity.lat, activity.lng = data.location.lat, data.location.lng
        activity.radius_m = data.location.radius_m
    if data.visibility is not None:
        activity.visibility = data.visibility.value
    if data.service_hours is not None:
        activity.service_hours = data.service_hours
    if data.post is not None:
        activity.post = data.post.value
    await session.flush()
    if co_hosts is not None:
        await co_hosting.name(session, principal, activity, co_hosts)
    if capacity_raised and activity.status == ActivityStatus.published.value:
        promotions = await seats.fill_seats(session, activity.id, clock.now())
        signups.record_promotions(session, activity.id, promotions, "capacity_raised")
        await session.refresh(activity)
    audit(
        session,
        action="activity.update",
        object_type=OBJECT,
        object_id=activity.id,
        org_id=activity.org_id,
        actor_id=principal.user_id,
        comment=",".join(sorted(changes)),
    )
    return to_read(activity, await repo.co_hosts(session, activity.id), None)


async def _transition(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    *,
    allowed_from: tuple[ActivityStatus, ...],
    to: ActivityStatus,
    comment: str | None = None,
) -> Activity:
    """Move the (locked) activity to `to`, audited and announced."""
    activity = await access.for_officer(session, principal, activity_id, lock=True)
    before = activity.status
    if before not in {s.value for s in allowed_from}:
        raise InvalidTransition()
    now = clock.now()
    if to is ActivityStatus.published and now >= activity.starts_at:
        raise AppError("activity_started")
    if to is ActivityStatus.completed and now < activity.starts_at:
        raise AppError("activity_not_started")
    activity.status = to.value
    if to is ActivityStatus.published:
        activity.published_at = now
    elif to is ActivityStatus.completed:
        activity.completed_at = now
    else:
        activity.cancelled_at = now
        activity.cancel_reason = comment
    audit(
        session,
        action=f"activity.{to.value}",
        object_type=OBJECT,
        object_id=activity.id,
        org_id=activity.org_id,
        actor_id=principal.user_id,
        from_state=before,
        to_state=to.value,
        comment=comment,
    )
    record_event(
        session,
        f"activity.{to.value}",
        {"activity_id": str(activity.id), "org_id": str(activity.org_id), "status": to.value},
        aggregate_id=str(activity.id),
    )
    return activity


async def _read_back(session: AsyncSession, activity: Activity) -> ActivityRead:
    await session.flush()
    await session.refresh(activity)
    return to_read(activity, await repo.co_hosts(session, activity.id), None)


async def publish_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> ActivityRead:
    activity = await _transition(
        session,
        principal,
        activity_id,
        allowed_from=(ActivityStatus.draft,),
        to=ActivityStatus.published,
    )
    return await _read_back(session, activity)


async def complete_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> ActivityRead:
    activity = await _transition(
        session,
        principal,
        activity_id,
        allowed_from=(ActivityStatus.published,),
        to=ActivityStatus.completed,
    )
    return await _read_back(session, activity)


async def cancel_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID, reason: str
) -> ActivityRead:
    """Cancel a draft or published activity, and every sign-up with it."""
    activity = await _transition(
        session,
        principal,
        activity_id,
        allowed_from=(ActivityStatus.draft, ActivityStatus.published),
        to=ActivityStatus.cancelled,
        comment=reason,
    )
    # The row is locked: no sign-up can slip in, and the counters may be set outright.
    cancelled = await seats.cancel_all_signups(session, activity.id, clock.now())
    activity.confirmed_count = 0
    activity.waitlist_count = 0
    for c in cancelled:
        record_event(
            session,
            "activity.signup.cancelled",
            {
                "activity_id": str(activity.id),
                "signup_id": str(c.signup_id),
                "user_id": str(c.user_id),
                "reason": "activity_cancelled",
            },
            aggregate_id=str(activity.id),
        )
    return await _read_back(session, activity)
