"""What members and officers read: the activity list, one activity, a member's sign-ups and
an activity's roster, and the shapes an activity takes in answers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import access
from app.activities.repository import activities as repo
from app.activities.repository import listing
from app.activities.repository import signups as signups_repo
from app.activities.repository.activities import CoHost
from app.activities.repository.listing import ListedActivity, ListFilters
from app.activities.schemas import (
    ActivityListItem,
    ActivityRead,
    ActivitySummary,
    AttendanceBrief,
    Category,
    CoHostRead,
    LocationOut,
    MySignup,
    MySignupItem,
    RosterItem,
)
from app.authz import Principal
from app.authz import activities as policy
from app.core import clock
from app.core.crypto import mask_phone
from app.core.errors import NotFound
from app.core.geo import parse_near
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import Activity, CoHostStatus, SignupStatus

DEFAULT_RADIUS_KM = 10.0

# --- shapes ----------------------------------------------------------------------------


class _Placed(Protocol):
    """Where an activity takes place: its row in the list and its object share these."""

    @property
    def location_name(self) -> str: ...
    @property
    def location_address(self) -> str | None: ...
    @property
    def lat(self) -> float: ...
    @property
    def lng(self) -> float: ...
    @property
    def radius_m(self) -> int: ...


def _location(src: _Placed) -> LocationOut:
    return LocationOut(
        name=src.location_name,
        address=src.location_address,
        lat=src.lat,
        lng=src.lng,
        radius_m=src.radius_m,
    )


def _seats_left(capacity: int | None, confirmed: int) -> int | None:
    return None if capacity is None else max(capacity - confirmed, 0)


def _my_signup(
    signup_id: uuid.UUID | None, status: str | None, position: int | None
) -> MySignup | None:
    if signup_id is None:
        return None
    return MySignup(id=signup_id, status=status, waitlist_position=position)


def list_item(row: ListedActivity) -> ActivityListItem:
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
        distance_m=None if row.distance_sq is None else round(math.sqrt(row.distance_sq), 1),
    )


def to_read(activity: Activity, co_hosts: Sequence[CoHost], mine: MySignup | None) -> ActivityRead:
    return ActivityRead(
        id=activity.id,
        org_id=activity.org_id,
        co_host_org_ids=[c.org_id for c in co_hosts],
        co_hosts=[CoHostRead(org_id=c.org_id, status=CoHostStatus(c.status)) for c in co_hosts],
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


# --- the list --------------------------------------------------------------------------


def _local(moment: datetime | None) -> datetime | None:
    """A time without an offset is read in the service's zone (Asia/Shanghai)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=clock.LOCAL_TZ)


def list_filters(
    *,
    org_id: uuid.UUID | None,
    starts_from: datetime | None,
    starts_before: datetime | None,
    category: Category | None,
    near: str | None,
    radius_km: float | None,
) -> ListFilters:
    """The list's query parameters read: times without an offset in the service's zone,
    `near=lat,lng` within `radius_km` (default 10 km; 422 for `radius_km` without `near`)."""
    return ListFilters(
        org_id=org_id,
        starts_from=_local(starts_from),
        starts_before=_local(starts_before),
        category=category.value if category else None,
        near=parse_near(near, radius_km, default_km=DEFAULT_RADIUS_KM),
    )


async def list_activities(
    session: AsyncSession, principal: Principal, filters: ListFilters, params: PageParams
) -> Page[ActivityListItem]:
    """Three queries whatever the page size: the caller, their organizations, the page."""
    belonging = await policy.belonging_of(session, principal)
    rows = await listing.list_published(
        session,
        visible=policy.visible_clause(belonging),
        user_id=principal.person.id,
        now=clock.now(),
        filters=filters,
        params=params,
    )
    if filters.near is None:
        items, cursor = page_of(rows, params, lambda r: (r.starts_at, r.id))
    else:
        items, cursor = page_of(rows, params, lambda r: (r.distance_sq, r.id))
    return Page(items=[list_item(r) for r in items], next_cursor=cursor)


# --- one activity ----------------------------------------------------------------------


async def get_activity(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> ActivityRead:
    """An activity the caller may see, with their own sign-up."""
    me = principal.person.id
    found = await repo.get_hosted(session, activity_id)
    if found is None:
        raise NotFound()
    activity = found.activity
    named = await repo.co_hosts(session, activity.id)
    accepted = [c for c in named if c.status == CoHostStatus.accepted]
    await policy.require_readable(
        session, principal, activity, found.host_path, [c.org_id for c in accepted]
    )
    mine = await signups_repo.my_active_signup(session, activity.id, me)
    # Invitations not (yet) accepted are the business of those who run the activity.
    shown = named if await policy.runs(session, principal, found.host_path) else accepted
    return to_read(
        activity,
        shown,
        None if mine is None else _my_signup(mine.id, mine.status, mine.position),
    )


# --- sign-ups --------------------------------------------------------------------------


async def my_signups(
    session: AsyncSession, principal: Principal, status: SignupStatus | None, params: PageParams
) -> Page[MySignupItem]:
    """The caller's sign-ups, newest first."""
    rows = await signups_repo.my_signups(
        session, principal.person.id, status.value if status else None, params
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
    """An activity's sign-ups with attendance, for those who run it."""
    await access.for_officer(session, principal, activity_id)
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
