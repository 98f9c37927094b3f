"""HTTP for activities: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.activities import attendance, lifecycle, review, signups, views
from app.activities.co_host_router import router as co_host_router
from app.activities.schemas import (
    ActivityCreate,
    ActivityListItem,
    ActivityRead,
    ActivityUpdate,
    AttendanceCode,
    AttendanceCreate,
    AttendanceMark,
    AttendanceQueueItem,
    AttendanceRead,
    AttendanceReview,
    AttendanceReviewResponse,
    CancelRequest,
    Category,
    MySignupItem,
    RosterItem,
    SignupRead,
)
from app.authz.guards import CurrentMember, OfficerOrg, ReviewerScope
from app.core.geo import NEAR_PATTERN
from app.core.openapi import problems
from app.core.pagination import Page
from app.core.validators import FilterTime
from app.deps import AppSettings, DbSession, Paging
from app.idempotency import IdempotentRoute
from app.models.activity import AttendanceStatus, SignupStatus

router = APIRouter(tags=["activities"], route_class=IdempotentRoute)


@router.post(
    "/activities",
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 404, 422),
)
async def activities_create(
    body: ActivityCreate, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    """Create a draft activity hosted by `org_id` (officers of it or above)."""
    return await lifecycle.create_activity(session, principal, body)


@router.patch("/activities/{activity_id}", responses=problems(403, 404, 409, 422))
async def activities_update(
    activity_id: uuid.UUID, body: ActivityUpdate, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    """Edit a draft or published activity; raising the capacity promotes from the waitlist
    (409 `capacity_below_confirmed` when lowered below the confirmed sign-ups)."""
    return await lifecycle.update_activity(session, principal, activity_id, body)


@router.post("/activities/{activity_id}/publish", responses=problems(403, 404, 409))
async def activities_publish(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    """draft → published, before the start (409 `activity_started` after it)."""
    return await lifecycle.publish_activity(session, principal, activity_id)


@router.post("/activities/{activity_id}/cancel", responses=problems(403, 404, 409, 422))
async def activities_cancel(
    activity_id: uuid.UUID, body: CancelRequest, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    """draft or published → cancelled; every sign-up is cancelled with it."""
    return await lifecycle.cancel_activity(session, principal, activity_id, body.reason)


@router.post("/activities/{activity_id}/complete", responses=problems(403, 404, 409))
async def activities_complete(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    """published → completed, once it has started."""
    return await lifecycle.complete_activity(session, principal, activity_id)


@router.get("/activities", responses=problems(403, 422))
async def activities_list(
    session: DbSession,
    principal: CurrentMember,
    page: Paging,
    org_id: Annotated[uuid.UUID | None, Query(description="Hosted or co-hosted by")] = None,
    starts_from: Annotated[
        FilterTime | None, Query(alias="from", description="Starting at or after")
    ] = None,
    starts_before: Annotated[
        FilterTime | None, Query(alias="to", description="Starting before")
    ] = None,
    category: Category | None = None,
    near: Annotated[
        str | None,
        Query(
            max_length=60,
            pattern=NEAR_PATTERN,
            description="`lat,lng`: nearest first, within `radius_km`",
        ),
    ] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=200, description="Default 10")] = None,
) -> Page[ActivityListItem]:
    """Published activities the caller may see that have not ended, soonest first (nearest
    first with `near`), each with `seats_left`, `waitlist_count` and `my_signup`."""
    filters = views.list_filters(
        org_id=org_id,
        starts_from=starts_from,
        starts_before=starts_before,
        category=category,
        near=near,
        radius_km=radius_km,
    )
    return await views.list_activities(session, principal, filters, page)


@router.get("/activities/{activity_id}", responses=problems(403, 404))
async def activities_get(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> ActivityRead:
    return await views.get_activity(session, principal, activity_id)


@router.post(
    "/activities/{activity_id}/signup",
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 404, 409),
)
async def activities_signup(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> SignupRead:
    """Take a seat, or a place on the waitlist when full (`waitlist_position`, 1 = next)."""
    return await signups.sign_up(session, principal, activity_id)


@router.delete(
    "/activities/{activity_id}/signup",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(403, 404, 409),
)
async def activities_signup_cancel(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> Response:
    """Cancel the caller's sign-up; a freed seat goes to the first waitlisted."""
    await signups.cancel_signup(session, principal, activity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/signups", responses=problems(403, 422))
async def me_signups_list(
    session: DbSession,
    principal: CurrentMember,
    page: Paging,
    status: SignupStatus | None = None,
) -> Page[MySignupItem]:
    """The caller's sign-ups, newest first."""
    return await views.my_signups(session, principal, status, page)


@router.get("/activities/{activity_id}/signups", responses=problems(403, 404, 422))
async def activities_signups_list(
    activity_id: uuid.UUID,
    session: DbSession,
    principal: CurrentMember,
    page: Paging,
    status: SignupStatus | None = None,
) -> Page[RosterItem]:
    """The roster, in sign-up order, with attendance (officers)."""
    return await views.roster(session, principal, activity_id, status, page)


@router.get("/activities/{activity_id}/attendance-code", responses=problems(403, 404, 409))
async def activities_attendance_code(
    activity_id: uuid.UUID, session: DbSession, principal: CurrentMember
) -> AttendanceCode:
    """The current rotating code (officers), to show as a QR code on site."""
    return await attendance.attendance_code(session, principal, activity_id)


@router.post(
    "/activities/{activity_id}/attendance",
    status_code=status.HTTP_201_CREATED,
    responses={
        **problems(403, 404, 409, 422),
        200: {"description": "Already recorded: the attendance as it stands"},
    },
)
async def activities_attendance_create(
    activity_id: uuid.UUID,
    body: AttendanceCreate,
    session: DbSession,
    principal: CurrentMember,
    settings: AppSettings,
    response: Response,
) -> AttendanceRead:
    """Check in on site with the rotating code or a location fix inside the geofence, from
    30 minutes before the start to the end; a confirmed sign-up is required.  Sent late (see
    `scanned_at`) it is recorded `pending`, credits nothing, and waits for an officer of the
    host (`POST /attendance/review`)."""
    late = attendance.LateRule(
        after=timedelta(seconds=settings.attendance_late_after_seconds),
        grace=timedelta(seconds=settings.attendance_end_grace_seconds),
    )
    recorded, created = await attendance.check_in(session, principal, activity_id, body, late)
    if not created:
        response.status_code = status.HTTP_200_OK
    return recorded


@router.put(
    "/activities/{activity_id}/attendance/{user_id}", responses=problems(403, 404, 409, 422)
)
async def activities_attendance_mark(
    activity_id: uuid.UUID,
    user_id: uuid.UUID,
    body: AttendanceMark,
    session: DbSession,
    principal: CurrentMember,
) -> AttendanceRead:
    """Mark a confirmed member present or absent by hand (officers), a pending check-in too;
    absent takes back the credited service hours.  Never one's own attendance: 403
    `review_own_forbidden`."""
    status = AttendanceStatus(body.status.value)
    return await attendance.mark_attendance(session, principal, activity_id, user_id, status)


@router.get(
    "/orgs/{org_id}/attendance",
    responses=problems(401, 403, 404, 422),
    tags=["orgs"],
)
async def orgs_attendance_list(
    org: OfficerOrg,
    session: DbSession,
    paging: Paging,
    status: Annotated[
        AttendanceStatus | None,
        Query(description="Only this state (every state if absent); `pending` is the queue"),
    ] = None,
) -> Page[AttendanceQueueItem]:
    """Attendance at activities hosted in the organization's subtree, oldest first, with how
    late each check-in was sent (`delay_seconds`): the queue of late check-ins to confirm."""
    return await review.queue(session, org, status, paging)


@router.post("/attendance/review", responses=problems(401, 403, 422))
async def attendance_review(
    data: AttendanceReview, session: DbSession, principal: CurrentMember, scope: ReviewerScope
) -> AttendanceReviewResponse:
    """Confirm (present: the hours are credited) or reject (absent, reason required) pending
    check-ins at once.  Each id gets `{id, ok, status?, code?}`: `not_found` for an unknown id
    or one outside the caller's subtree, `invalid_transition` for one no longer pending,
    `review_own_forbidden` for the officer's own check-in."""
    return await review.decide_many(
        session, principal.person.id, scope, data.ids, data.decision, data.comment or None
    )


# Co-host invitations live under the invited organization; their routes sit here in the
# document.
router.include_router(co_host_router)
