"""The rules of activities: lifecycle, visibility, sign-up with capacity and waitlist,
on-site attendance and the service hours it credits.  No FastAPI here, and no commit: the
request's session commits once after the endpoint returns."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import codes
from app.activities.repository import activities as activities_repo
from app.activities.repository import attendance as attendance_repo
from app.activities.repository import listing, seats
from app.activities.repository import signups as signups_repo
from app.activities.repository.listing import ListedActivity, ListFilters
from app.activities.repository.seats import Promotion
from app.activities.schemas import (
    ActivityCreate,
    ActivityListItem,
    ActivityRead,
    ActivitySummary,
    ActivityUpdate,
    AttendanceBrief,
    AttendanceCode,
    AttendanceCreate,
    AttendanceRead,
    LocationOut,
    MySignup,
    MySignupItem,
    RosterItem,
    SignupRead,
)
from app.authz import Principal
from app.authz import activities as policy
from app.core import clock
from app.core.audit import audit
from app.core.crypto import mask_phone
from app.core.errors import (
    AppError,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    register_codes,
)
from app.core.geo import distance_m
from app.core.i18n import text
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import (
    Activity,
    ActivityCredit,
    ActivityStatus,
    Attendance,
    AttendanceMethod,
    AttendanceStatus,
    Signup,
    SignupStatus,
)
from app.models.organization import Organization
from app.orgs.tree import district_of

register_codes(
    {
        "already_signed_up": (
            409,
            "您已报名该活动",
            "You have already signed up for this activity",
        ),
        "signup_closed": (409, "报名已截止或活动已开始", "Sign-up for this activity is closed"),
        "capacity_below_confirmed": (
            409,
            "名额不能少于已确认报名人数",
            "The capacity cannot be below the number of confirmed sign-ups",
        ),
        "activity_started": (409, "活动已开始，不能发布", "The activity has already started"),
        "activity_not_started": (409, "活动尚未开始", "The activity has not started yet"),
        "not_confirmed": (
            409,
            "没有已确认的报名，不能签到",
            "There is no confirmed sign-up for this activity",
        ),
        "attendance_closed": (
            409,
            "不在签到时间内（活动开始前30分钟至活动结束）",
            "Outside the check-in window (30 minutes before the start until the end)",
        ),
        "attendance_code_invalid": (
            422,
            "签到码无效或已过期",
            "The attendance code is not valid or has expired",
        ),
        "location_inaccurate": (
            422,
            "定位精度不足，请到开阔处重新定位或扫码签到",
            "The location fix is not accurate enough; retry or scan the code",
        ),
        "outside_geofence": (422, "不在活动签到范围内", "Not within the activity's check-in area"),
        "scan_too_old": (
            422,
            "签到时间距今超过24小时，不能补交",
            "Check-ins may be sent at most 24 hours late",
        ),
        "attendance_decided": (
            409,
            "组织已登记您缺席，请联系活动负责人",
            "An officer has recorded you as absent; contact the organizer",
        ),
    }
)

ATTENDANCE_OPENS = timedelta(minutes=30)
LATE_SCAN_LIMIT = timedelta(hours=24)
CLOCK_SKEW = timedelta(minutes=2)
OBJECT = "activity"


# --- shaping ---------------------------------------------------------------------------


def _seats_left(capacity: int | None, confirmed: int) -> int | None:
    return None if capacity is None else max(capacity - confirmed, 0)


def _my_signup(signup_id: Any, status: Any, position: Any) -> MySignup | None:
    if signup_id is None:
        return None
    return MySignup(id=signup_id, status=status, waitlist_position=position)


def _location(src: Any) -> LocationOut:
    """The place of an activity, from its row or its object (the same column names)."""
    return LocationOut(
        name=src.location_name,
        address=src.location_address,
        lat=src.lat,
        lng=src.lng,
        radius_m=src.radius_m,
    )


def list_item(row: ListedActivity, distance: float | None = None) -> ActivityListItem:
    return ActivityListItem(
        id=row.id,
        org_id=row.org_id,
        title=row.title,
        category=row.category,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        location=_location(row),
        capacity=row.capacity,
        seats_left=_seats_left(row.capacity, row.confirmed_count),
        waitlist_count=row.waitlist_count,
        signup_deadline=row.signup_deadline,
        visibility=row.visibility,
        service_hours=row.service_hours,
        post=row.post,
        status=row.status,
        my_signup=_my_signup(row.my_id, row.my_status, row.my_position),
        distance_m=distance,
    )


def to_read(
    activity: Activity, co_hosts: Sequence[uuid.UUID], mine: MySignup | None
) -> ActivityRead:
    return ActivityRead(
        id=activity.id,
        org_id=activity.org_id,
        co_host_org_ids=list(co_hosts),
        title=activity.title,
        description=activity.description,
        category=activity.category,
        starts_at=activity.starts_at,
        ends_at=activity.ends_at,
        location=_location(activity),
        capacity=activity.capacity,
        confirmed_count=activity.confirmed_count,
        seats_left=_seats_left(activity.capacity, activity.confirmed_count),
        waitlist_count=activity.waitlist_count,
        signup_deadline=activity.signup_deadline,
        visibility=activity.visibility,
        service_hours=activity.service_hours,
        post=activity.post,
        status=activity.status,
        my_signup=mine,
        published_at=activity.published_at,
        completed_at=activity.completed_at,
        cancelled_at=activity.cancelled_at,
        cancel_reason=activity.cancel_reason,
        created_at=activity.created_at,
        updated_at=activity.updated_at,
    )


# --- guards and validation -------------------------------------------------------------


def _me(principal: Principal) -> uuid.UUID:
    if principal.user is None:  # pragma: no cover - the router requires a member
        raise Forbidden("members_only")
    return principal.user.id


async def _for_officer(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID, *, lock: bool = False
) -> Activity:
    """The activity, when the caller runs it (an officer of its host or above)."""
    found = await activities_repo.get_hosted(session, activity_id, lock=lock)
    if found is None:
        raise NotFound()
    await policy.require_runs(session, principal, found[0], found[1])
    return found[0]


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
) -> list[uuid.UUID]:
    unique = sorted(set(org_ids))
    if host_id in unique:
        raise ValidationFailed(
            "co_host_org_ids",
            text("协办组织不能包含主办组织", "co_host_org_ids must not include the host"),
        )
    missing = set(unique) - await activities_repo.existing_org_ids(session, unique)
    if missing:
        raise ValidationFailed(
            "co_host_org_ids",
            text("协办组织不存在", "Unknown organization in co_host_org_ids"),
        )
    return unique


# --- lifecycle -------------------------------------------------------------------------


async def create_activity(
    session: AsyncSession, principal: Principal, data: ActivityCreate
) -> ActivityRead:
    host = await session.get(Organization, data.org_id)
    if host is None:
        raise ValidationFailed("org_id", text("主办组织不存在", "Unknown organization"))
    await policy.require_host_officer(session, principal, host.path)
    _check_times(data.starts_at, data.ends_at, data.signup_deadline)
    co_hosts = await _check_co_hosts(session, data.co_host_org_ids, host.id)
    activity = Activity(
        org_id=host.id,
        district_id=(await district_of(session, host.path)).id,
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
    await activities_repo.replace_co_hosts(session, activity.id, co_hosts)
    audit(
        session,
        action="activity.create",
        object_type=OBJECT,
        object_id=activity.id,
        org_id=host.id,
        actor_id=principal.user_id,
        to_state=activity.status,
    )
    return to_read(activity, co_hosts, None)


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
    activity = await _for_officer(session, principal, activity_id, lock=True)
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
    co_hosts: list[uuid.UUID] | None = None
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
        await activities_repo.replace_co_hosts(session, activity.id, co_hosts)
    if capacity_raised and activity.status == ActivityStatus.published.value:
        now = clock.now()
        promotions = await seats.fill_seats(session, activity.id, now)
        _record_promotions(session, activity.id, promotions, "capacity_raised")
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
    if co_hosts is None:
        co_hosts = await activities_repo.co_host_ids(session, activity.id)
    return to_read(activity, co_hosts, None)


async def _transition(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    *,
    allowed_from: tuple[ActivityStatus, ...],
    to: ActivityStatus,
    comment: str | None = None,
) -> tuple[Activity, str]:
    activity = await _for_officer(session, principal, activity_id, lock=True)
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
    return activity, before


async def _read_back(session: AsyncSession, activity: Activity) -> ActivityRead:
    await session.flush()
    await session.refresh(activity)
    return to_read(activity, await activities_repo.co_host_ids(session, activity.id), None)


async def publish_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> ActivityRead:
    activity, _ = await _transition(
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
    activity, _ = await _transition(
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
    activity, _ = await _transition(
        session,
        principal,
        activity_id,
        allowed_from=(ActivityStatus.draft, ActivityStatus.published),
        to=ActivityStatus.cancelled,
        comment=reason,
    )
    now = clock.now()
    # The row is locked: no sign-up can slip in, and the counters may be set outright.
    cancelled = await seats.cancel_all_signups(session, activity.id, now)
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


# --- reading ---------------------------------------------------------------------------


async def list_activities(
    session: AsyncSession, principal: Principal, filters: ListFilters, params: PageParams
) -> Page[ActivityListItem]:
    """Three queries whatever the page size: the caller, their organizations, the page."""
    me = _me(principal)
    belonging = await policy.belonging_of(session, principal)
    rows = await listing.list_published(
        session,
        visible=policy.visible_clause(belonging),
        user_id=me,
        now=clock.now(),
        filters=filters,
        params=params,
    )
    if filters.near is None:
        items, cursor = page_of(rows, params, lambda r: (r.starts_at, r.id))
        return Page(items=[list_item(r) for r in items], next_cursor=cursor)
    items, cursor = page_of(rows, params, lambda r: (r.distance_sq, r.id))
    return Page(
        items=[list_item(r, round(math.sqrt(r.distance_sq or 0.0), 1)) for r in items],
        next_cursor=cursor,
    )


async def get_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> ActivityRead:
    me = _me(principal)
    found = await activities_repo.get_hosted(session, activity_id)
    if found is None:
        raise NotFound()
    activity, host_path = found
    co_hosts = await activities_repo.co_host_ids(session, activity.id)
    await policy.require_readable(session, principal, activity, host_path, co_hosts)
    mine = await signups_repo.my_active_signup(session, activity.id, me)
    return to_read(
        activity,
        co_hosts,
        None if mine is None else _my_signup(mine.id, mine.status, mine.position),
    )


# --- sign-up ---------------------------------------------------------------------------

_SIGNUP_ATTEMPTS = 5


async def sign_up(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> SignupRead:
    me = _me(principal)
    now = clock.now()
    found = await activities_repo.get_hosted(session, activity_id)
    if found is None or found[0].status == ActivityStatus.draft.value:
        raise NotFound()
    activity = found[0]
    if activity.status != ActivityStatus.published.value:
        raise AppError("signup_closed")
    if now >= activity.starts_at or (
        activity.signup_deadline is not None and now >= activity.signup_deadline
    ):
        raise AppError("signup_closed")
    co_hosts = await activities_repo.co_host_ids(session, activity.id)
    await policy.require_may_sign_up(session, principal, activity, co_hosts)
    if await signups_repo.my_active_signup(session, activity.id, me) is not None:
        raise AppError("already_signed_up")

    status: SignupStatus | None = None
    seq: int | None = None
    for _ in range(_SIGNUP_ATTEMPTS):
        if await seats.take_seat(session, activity.id, now):
            status = SignupStatus.confirmed
            break
        seq = await seats.join_waitlist(session, activity.id, now)
        if seq is not None:
            status = SignupStatus.waitlisted
            break
        # Neither: a seat was freed between the two updates, or sign-up just closed.
        if not await seats.signup_window(session, activity.id, now):
            raise AppError("signup_closed")
    if status is None:  # pragma: no cover - needs a seat to flicker five times in a row
        raise AppError("conflict")

    signup = Signup(
        activity_id=activity.id,
        user_id=me,
        status=status.value,
        waitlist_seq=seq,
        created_at=now,
        confirmed_at=now if status is SignupStatus.confirmed else None,
    )
    session.add(signup)
    try:
        await session.flush()
    except IntegrityError as exc:
        # The same member twice at once: the partial unique index keeps one; the counter
        # update above is rolled back with this transaction.
        raise AppError("already_signed_up") from exc
    position = None
    if status is SignupStatus.waitlisted:
        position = await signups_repo.waitlist_position(session, signup.id)
    return SignupRead(
        id=signup.id,
        activity_id=activity.id,
        status=status,
        waitlist_position=position,
        created_at=signup.created_at,
    )


def _record_promotions(
    session: AsyncSession,
    activity_id: uuid.UUID,
    promotions: Sequence[Promotion],
    reason: str,
) -> None:
    for p in promotions:
        record_event(
            session,
            "activity.signup.promoted",
            {
                "activity_id": str(activity_id),
                "signup_id": str(p.signup_id),
                "user_id": str(p.user_id),
                "status": SignupStatus.confirmed.value,
                "reason": reason,
            },
            aggregate_id=str(activity_id),
        )


async def cancel_signup(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> None:
    me = _me(principal)
    now = clock.now()
    # Lock the activity first, as sign-up does, so that the counters, the waitlist and this
    # member's sign-up cannot move under us (and the lock order never inverts).
    found = await activities_repo.get_hosted(session, activity_id, lock=True)
    if found is None:
        raise NotFound()
    activity = found[0]
    signup = await signups_repo.active_signup(session, activity.id, me)
    if signup is None:
        raise NotFound()
    if now >= activity.starts_at:
        raise AppError("signup_closed")
    was = signup.status
    signup.status = SignupStatus.cancelled.value
    signup.cancelled_at = now
    await session.flush()
    await seats.leave(session, activity.id, was)
    record_event(
        session,
        "activity.signup.cancelled",
        {
            "activity_id": str(activity.id),
            "signup_id": str(signup.id),
            "user_id": str(me),
            "reason": "member",
        },
        aggregate_id=str(activity.id),
    )
    if was == SignupStatus.confirmed.value:
        promotions = await seats.fill_seats(session, activity.id, now)
        _record_promotions(session, activity.id, promotions, "seat_freed")


async def my_signups(
    session: AsyncSession, principal: Principal, status: SignupStatus | None, params: PageParams
) -> Page[MySignupItem]:
    rows = await signups_repo.my_signups(
        session, _me(principal), status.value if status else None, params
    )
    items, cursor = page_of(rows, params, lambda r: (r.created_at, r.id))
    return Page(
        items=[
            MySignupItem(
                id=r.id,
                status=r.status,
                waitlist_position=r.position,
                created_at=r.created_at,
                activity=ActivitySummary(
                    id=r.activity_id,
                    title=r.title,
                    starts_at=r.starts_at,
                    ends_at=r.ends_at,
                    location_name=r.location_name,
                    status=r.activity_status,
                ),
                attendance_status=r.attendance_status,
            )
            for r in items
        ],
        next_cursor=cursor,
    )


async def roster(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    status: SignupStatus | None,
    params: PageParams,
) -> Page[RosterItem]:
    await _for_officer(session, principal, activity_id)
    rows = await signups_repo.roster(session, activity_id, status.value if status else None, params)
    items, cursor = page_of(rows, params, lambda r: (r.created_at, r.id))
    return Page(
        items=[
            RosterItem(
                signup_id=r.id,
                user_id=r.user_id,
                name=r.name,
                phone_masked=mask_phone(r.phone),
                status=r.status,
                waitlist_position=r.position,
                created_at=r.created_at,
                attendance=None
                if r.attendance_status is None
                else AttendanceBrief(
                    status=r.attendance_status,
                    method=r.attendance_method,
                    attended_at=r.attended_at,
                ),
            )
            for r in items
        ],
        next_cursor=cursor,
    )


# --- attendance ------------------------------------------------------------------------

_ATTENDABLE = (ActivityStatus.published.value, ActivityStatus.completed.value)


async def attendance_code(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> AttendanceCode:
    activity = await _for_officer(session, principal, activity_id)
    if activity.status not in _ATTENDABLE:
        raise AppError("attendance_closed")
    window = codes.window_of(clock.now())
    return AttendanceCode(
        code=codes.code_for(activity.id, window),
        expires_at=codes.window_end(window),
        window_seconds=codes.WINDOW_SECONDS,
    )


def _in_window(activity: Activity, moment: datetime) -> bool:
    return activity.starts_at - ATTENDANCE_OPENS <= moment <= activity.ends_at


async def _credit(session: AsyncSession, activity: Activity, user_id: uuid.UUID) -> float:
    """Credit the activity's service hours to the member once; the hours credited."""
    existing = await attendance_repo.credit_of(session, activity.id, user_id)
    if existing is not None:
        return existing.hours
    if activity.service_hours <= 0:
        return 0.0
    credit = ActivityCredit(
        activity_id=activity.id,
        user_id=user_id,
        org_id=activity.org_id,
        post=activity.post,
        hours=activity.service_hours,
        occurred_on=activity.starts_at.astimezone(clock.LOCAL_TZ).date(),
        status="approved",
    )
    try:
        async with session.begin_nested():
            session.add(credit)
    except IntegrityError:
        # Credited by a concurrent request for the same member: once is the rule.
        pass
    return activity.service_hours


def _attendance_event(session: AsyncSession, attendance: Attendance, hours: float) -> None:
    record_event(
        session,
        "activity.attendance.recorded",
        {
            "activity_id": str(attendance.activity_id),
            "user_id": str(attendance.user_id),
            "status": attendance.status,
            "method": attendance.method,
            "credited_hours": hours,
        },
        aggregate_id=str(attendance.activity_id),
    )


def _attendance_read(attendance: Attendance, hours: float) -> AttendanceRead:
    return AttendanceRead(
        activity_id=attendance.activity_id,
        user_id=attendance.user_id,
        status=AttendanceStatus(attendance.status),
        method=AttendanceMethod(attendance.method),
        attended_at=attendance.attended_at,
        recorded_at=attendance.recorded_at,
        credited_hours=hours,
    )


async def check_in(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID, data: AttendanceCreate
) -> tuple[AttendanceRead, bool]:
    """A member's on-site check-in; (attendance, created).  A repeated check-in answers with
    the recorded attendance, so that a retry from a flaky network is harmless."""
    me = _me(principal)
    now = clock.now()
    by_code = data.code is not None
    by_geo = data.lat is not None or data.lng is not None or data.accuracy_m is not None
    if by_code == by_geo:
        raise ValidationFailed(
            "code",
            text(
                "请提供签到码，或提供定位（lat、lng、accuracy_m）其中一种",
                "Send either `code` or `lat`, `lng` and `accuracy_m`",
            ),
        )
    if by_geo and (data.lat is None or data.lng is None or data.accuracy_m is None):
        missing = next(
            name
            for name, value in (
                ("lat", data.lat),
                ("lng", data.lng),
                ("accuracy_m", data.accuracy_m),
            )
            if value is None
        )
        raise ValidationFailed(missing, text("必填项", "Field required"))
    moment = now
    if data.scanned_at is not None:
        if data.scanned_at > now + CLOCK_SKEW:
            raise ValidationFailed(
                "scanned_at", text("签到时间不能晚于当前时间", "scanned_at is in the future")
            )
        if now - data.scanned_at > LATE_SCAN_LIMIT:
            raise AppError("scan_too_old")
        moment = min(data.scanned_at, now)

    activity = await session.get(Activity, activity_id)
    if activity is None or activity.status == ActivityStatus.draft.value:
        raise NotFound()
    if await signups_repo.confirmed_signup_id(session, activity.id, me) is None:
        raise AppError("not_confirmed")
    if activity.status not in _ATTENDABLE or not _in_window(activity, moment):
        raise AppError("attendance_closed")
    if data.code is not None:
        if not codes.verify(activity.id, data.code, moment):
            raise AppError("attendance_code_invalid")
        method = AttendanceMethod.code
    else:
        assert data.lat is not None and data.lng is not None and data.accuracy_m is not None
        if data.accuracy_m > activity.radius_m:
            raise AppError("location_inaccurate")
        if distance_m(data.lat, data.lng, activity.lat, activity.lng) > activity.radius_m:
            raise AppError("outside_geofence")
        method = AttendanceMethod.geo

    existing = await attendance_repo.attendance_of(session, activity.id, me)
    if existing is not None:
        return await _repeat(session, activity, existing)
    attendance = Attendance(
        activity_id=activity.id,
        user_id=me,
        status=AttendanceStatus.present.value,
        method=method.value,
        attended_at=moment,
        recorded_at=now,
        lat=data.lat,
        lng=data.lng,
        accuracy_m=data.accuracy_m,
    )
    try:
        async with session.begin_nested():
            session.add(attendance)
    except IntegrityError:
        # The same check-in twice at once: answer with the one that won.
        existing = await attendance_repo.attendance_of(session, activity.id, me)
        assert existing is not None
        return await _repeat(session, activity, existing)
    hours = await _credit(session, activity, me)
    _attendance_event(session, attendance, hours)
    return _attendance_read(attendance, hours), True


async def _repeat(
    session: AsyncSession, activity: Activity, existing: Attendance
) -> tuple[AttendanceRead, bool]:
    if existing.status != AttendanceStatus.present.value:
        raise AppError("attendance_decided")
    credit = await attendance_repo.credit_of(session, activity.id, existing.user_id)
    return _attendance_read(existing, credit.hours if credit else 0.0), False


async def mark_attendance(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    user_id: uuid.UUID,
    status: AttendanceStatus,
) -> AttendanceRead:
    """An officer records a member present or absent by hand; absent takes the credit back."""
    activity = await _for_officer(session, principal, activity_id)
    now = clock.now()
    if activity.status not in _ATTENDABLE or now < activity.starts_at - ATTENDANCE_OPENS:
        raise AppError("attendance_closed")
    if await signups_repo.confirmed_signup_id(session, activity.id, user_id) is None:
        raise AppError("not_confirmed")
    attendance = await attendance_repo.attendance_of(session, activity.id, user_id)
    created = False
    if attendance is None:
        fresh = Attendance(
            activity_id=activity.id,
            user_id=user_id,
            status=status.value,
            method=AttendanceMethod.manual.value,
            attended_at=now,
            recorded_at=now,
            marked_by=principal.user_id,
        )
        try:
            async with session.begin_nested():
                session.add(fresh)
            attendance, created = fresh, True
        except IntegrityError:
            # The member checked in (or another officer marked) at this very moment: the
            # officer's mark goes over what they recorded.
            attendance = await attendance_repo.attendance_of(session, activity.id, user_id)
            assert attendance is not None
    before = None if created else attendance.status
    if not created and before != status.value:
        attendance.status = status.value
        attendance.method = AttendanceMethod.manual.value
        attendance.attended_at = now
        attendance.recorded_at = now
        attendance.marked_by = principal.user_id
    await session.flush()
    if status is AttendanceStatus.present:
        hours = await _credit(session, activity, user_id)
    else:
        await attendance_repo.remove_credit(session, activity.id, user_id)
        hours = 0.0
    audit(
        session,
        action="activity.attendance.mark",
        object_type="activity_attendance",
        object_id=attendance.id,
        org_id=activity.org_id,
        actor_id=principal.user_id,
        from_state=before,
        to_state=status.value,
    )
    if before != status.value:
        _attendance_event(session, attendance, hours)
    return _attendance_read(attendance, hours)
