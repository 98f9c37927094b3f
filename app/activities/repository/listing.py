"""The members' activity list: published activities that have not ended, with the caller's
own sign-up, filtered, paged by start time or, around a point, by distance."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, bindparam, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.activities.repository.rows import AnySelect, typed
from app.activities.repository.signups import ACTIVE, position_of
from app.core.geo import Near, bounding_box, planar_distance_sq
from app.core.pagination import PageParams, decode_cursor, keyset
from app.models.activity import (
    Activity,
    ActivityStatus,
    CoHostStatus,
    Signup,
    activity_co_hosts,
)


@dataclass(frozen=True)
class ListFilters:
    org_id: uuid.UUID | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None
    category: str | None = None
    near: Near | None = None


class ListedActivity(NamedTuple):
    """One activity of the list, with the caller's active sign-up (if any)."""

    id: uuid.UUID
    org_id: uuid.UUID
    title: str
    category: str
    starts_at: datetime
    ends_at: datetime
    location_name: str
    location_address: str | None
    lat: float
    lng: float
    radius_m: int
    capacity: int | None
    confirmed_count: int
    waitlist_count: int
    signup_deadline: datetime | None
    visibility: str
    service_hours: float
    post: str
    status: str
    my_id: uuid.UUID | None
    my_status: str | None
    my_position: int | None
    # Squared planar distance from `near` in m², when the list is read around a point.
    distance_sq: float | None = None


_mine = aliased(Signup, name="mine")

_LIST: AnySelect = (
    select(
        Activity.id,
        Activity.org_id,
        Activity.title,
        Activity.category,
        Activity.starts_at,
        Activity.ends_at,
        Activity.location_name,
        Activity.location_address,
        Activity.lat,
        Activity.lng,
        Activity.radius_m,
        Activity.capacity,
        Activity.confirmed_count,
        Activity.waitlist_count,
        Activity.signup_deadline,
        Activity.visibility,
        Activity.service_hours,
        Activity.post,
        Activity.status,
        _mine.id.label("my_id"),
        _mine.status.label("my_status"),
        position_of(_mine).label("my_position"),
    )
    .outerjoin(
        _mine,
        and_(
            _mine.activity_id == Activity.id,
            _mine.user_id == bindparam("me"),
            _mine.status.in_(ACTIVE),
        ),
    )
    .where(Activity.status == ActivityStatus.published.value, Activity.ends_at > bindparam("now"))
)


async def list_published(
    session: AsyncSession,
    *,
    visible: ColumnElement[bool],
    user_id: uuid.UUID,
    now: datetime,
    filters: ListFilters,
    params: PageParams,
) -> list[ListedActivity]:
    """One page of the list, restricted to the activities `visible` lets through."""
    stmt = _LIST.where(visible)
    if filters.org_id is not None:
        stmt = stmt.where(
            or_(
                Activity.org_id == filters.org_id,
                exists().where(
                    activity_co_hosts.c.activity_id == Activity.id,
                    activity_co_hosts.c.org_id == filters.org_id,
                    activity_co_hosts.c.status == CoHostStatus.accepted.value,
                ),
            )
        )
    if filters.starts_from is not None:
        stmt = stmt.where(Activity.starts_at >= filters.starts_from)
    if filters.starts_before is not None:
        stmt = stmt.where(Activity.starts_at < filters.starts_before)
    if filters.category is not None:
        stmt = stmt.where(Activity.category == filters.category)
    if filters.near is None:
        stmt = keyset(stmt, [Activity.starts_at, Activity.id], params)
    else:
        stmt = _by_distance(stmt, filters.near, params)
    return typed(ListedActivity, await session.execute(stmt, {"me": user_id, "now": now}))


def _by_distance(stmt: AnySelect, near: Near, params: PageParams) -> AnySelect:
    lat, lng = Activity.lat, Activity.lng
    distance_sq = planar_distance_sq(lat, lng, near.lat, near.lng)
    # A bounding box first, so that the (lat, lng) index narrows the candidates.
    stmt = stmt.add_columns(distance_sq.label("distance_sq")).where(
        *bounding_box(lat, lng, near),
        distance_sq <= near.radius_m * near.radius_m,
    )
    if params.cursor is not None:
        last_distance, last_id = decode_cursor(params.cursor, (float, uuid.UUID))
        stmt = stmt.where(
            or_(
                distance_sq > last_distance,
                and_(distance_sq == last_distance, Activity.id > last_id),
            )
        )
    return stmt.order_by(distance_sq, Activity.id).limit(params.limit + 1)
