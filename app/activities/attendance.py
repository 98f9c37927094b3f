"""Attendance on site and the service hours it credits.

A member with a confirmed sign-up checks in, from 30 minutes before the start until the end,
with the rotating code an officer shows (`codes`) or a location fix inside the geofence.

A check-in is taken at its word only when it arrives on time.  One sent late (offline) counts
for the moment it claims to have been scanned (`scanned_at`, at most 24 hours back, not in the
future beyond a small clock skew), but when it reaches the server more than `late_after` after
that moment, or after the activity ended (plus `end_grace`), it is recorded `pending` with the
delay (`delay_seconds`) and credits nothing: a photo of the code, or a location fix replayed
after the fact, proves nothing by itself.  Officers of the host confirm or reject pending
check-ins in bulk (`review`).  For the same reason a code check-in by someone who runs the
activity (and so can read the code from anywhere) is pending too: nobody is their own witness.

Officers mark members present or absent by hand, never themselves (403
`review_own_forbidden`, the own-record rule of every review); absent takes the credit back.
Being present credits the activity's service hours once (`hours`: time counted once, at most
24 approved hours a day).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import access, codes, hours
from app.activities.repository import activities as activities_repo
from app.activities.repository import attendance as repo
from app.activities.repository import signups as signups_repo
from app.activities.schemas import AttendanceCode, AttendanceCreate, AttendanceRead
from app.authz import Principal, officer_scope
from app.core import clock
from app.core.audit import audit
from app.core.errors import AppError, NotFound, ReviewOwnForbidden, ValidationFailed
from app.core.geo import distance_m
from app.core.i18n import text
from app.core.outbox import record_event
from app.models.activity import (
    Activity,
    ActivityStatus,
    Attendance,
    AttendanceMethod,
    AttendanceStatus,
)

ATTENDANCE_OPENS = timedelta(minutes=30)
LATE_SCAN_LIMIT = timedelta(hours=24)
CLOCK_SKEW = timedelta(minutes=2)

_ATTENDABLE = (ActivityStatus.published.value, ActivityStatus.completed.value)


@dataclass(frozen=True)
class LateRule:
    """When a check-in waits for an officer instead of crediting at once: received more than
    `after` past its scan, or more than `grace` past the activity's end."""

    after: timedelta = timedelta(minutes=5)
    grace: timedelta = timedelta(minutes=5)

    def is_late(self, activity: Activity, moment: datetime, now: datetime) -> bool:
        return now - moment > self.after or now > activity.ends_at + self.grace


async def attendance_code(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> AttendanceCode:
    """The code of the current window, for an officer to show on site."""
    activity = await access.for_officer(session, principal, activity_id)
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
        id=attendance.id,
        activity_id=attendance.activity_id,
        user_id=attendance.user_id,
        status=AttendanceStatus(attendance.status),
        method=AttendanceMethod(attendance.method),
        attended_at=attendance.attended_at,
        recorded_at=attendance.recorded_at,
        delay_seconds=attendance.delay_seconds,
        credited_hours=hours,
    )


def _checked_moment(data: AttendanceCreate, now: datetime) -> datetime:
    """Validate the shape of a check-in (a code, or a full location fix) and return the
    moment it counts for."""
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
    if data.scanned_at is None:
        return now
    if data.scanned_at > now + CLOCK_SKEW:
        raise ValidationFailed(
            "scanned_at", text("签到时间不能晚于当前时间", "scanned_at is in the future")
        )
    if now - data.scanned_at > LATE_SCAN_LIMIT:
        raise AppError("scan_too_old")
    return min(data.scanned_at, now)


async def _runs(session: AsyncSession, principal: Principal, activity_id: uuid.UUID) -> bool:
    """Whether the caller runs the activity (and so may read its code at any time)."""
    hosted = await activities_repo.get_hosted(session, activity_id)
    if hosted is None:
        raise NotFound()
    return (await officer_scope(session, principal)).covers_path(hosted.host_path)


async def check_in(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    data: AttendanceCreate,
    late: LateRule,
) -> tuple[AttendanceRead, bool]:
    """A member's on-site check-in; (attendance, created).  A repeated check-in answers with
    the recorded attendance, so that a retry from a flaky network is harmless.  A late one
    (`late`), or a code check-in by someone who runs the activity, is recorded pending."""
    me = principal.person.id
    now = clock.now()
    moment = _checked_moment(data, now)
    activity = await access.for_member(session, activity_id)
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

    existing = await repo.attendance_of(session, activity.id, me)
    if existing is not None:
        return await _repeat(session, activity, existing)
    pending = late.is_late(activity, moment, now) or (
        method is AttendanceMethod.code and await _runs(session, principal, activity.id)
    )
    attendance = Attendance(
        activity_id=activity.id,
        user_id=me,
        org_id=activity.org_id,
        status=(AttendanceStatus.pending if pending else AttendanceStatus.present).value,
        method=method.value,
        attended_at=moment,
        recorded_at=now,
        updated_at=now,
        delay_seconds=max(0, int((now - moment).total_seconds())),
        lat=data.lat,
        lng=data.lng,
        accuracy_m=data.accuracy_m,
    )
    try:
        async with session.begin_nested():
            session.add(attendance)
    except IntegrityError:
        # The same check-in twice at once: answer with the one that won.
        existing = await repo.attendance_of(session, activity.id, me)
        assert existing is not None
        return await _repeat(session, activity, existing)
    credited = 0.0 if pending else await hours.credit(session, activity, me)
    _attendance_event(session, attendance, credited)
    return _attendance_read(attendance, credited), True


async def _repeat(
    session: AsyncSession, activity: Activity, existing: Attendance
) -> tuple[AttendanceRead, bool]:
    if existing.status == AttendanceStatus.absent.value:
        raise AppError("attendance_decided")
    credit = await repo.credit_of(session, activity.id, existing.user_id)
    return _attendance_read(existing, credit.hours if credit else 0.0), False


async def mark_attendance(
    session: AsyncSession,
    principal: Principal,
    activity_id: uuid.UUID,
    user_id: uuid.UUID,
    status: AttendanceStatus,
) -> AttendanceRead:
    """An officer records a member present or absent by hand (a pending check-in too);
    absent takes the credit back.  Never their own attendance: 403 `review_own_forbidden`."""
    activity = await access.for_officer(session, principal, activity_id)
    if user_id == principal.user_id:
        raise ReviewOwnForbidden()
    now = clock.now()
    if activity.status not in _ATTENDABLE or now < activity.starts_at - ATTENDANCE_OPENS:
        raise AppError("attendance_closed")
    if await signups_repo.confirmed_signup_id(session, activity.id, user_id) is None:
        raise AppError("not_confirmed")
    attendance = await repo.attendance_of(session, activity.id, user_id)
    created = False
    if attendance is None:
        fresh = Attendance(
            activity_id=activity.id,
            user_id=user_id,
            org_id=activity.org_id,
            status=status.value,
            method=AttendanceMethod.manual.value,
            attended_at=now,
            recorded_at=now,
            updated_at=now,
            marked_by=principal.user_id,
        )
        try:
            async with session.begin_nested():
                session.add(fresh)
            attendance, created = fresh, True
        except IntegrityError:
            # The member checked in (or another officer marked) at this very moment: the
            # officer's mark goes over what they recorded.
            attendance = await repo.attendance_of(session, activity.id, user_id)
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
        credited = await hours.credit(session, activity, user_id)
    else:
        await repo.remove_credit(session, activity.id, user_id)
        credited = 0.0
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
        _attendance_event(session, attendance, credited)
    return _attendance_read(attendance, credited)
