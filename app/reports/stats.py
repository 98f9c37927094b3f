"""Statistics of a subtree (GET /orgs/{org_id}/stats): a fixed handful of aggregate
statements, never rows brought into Python."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.errors import ValidationFailed
from app.core.i18n import text
from app.models.organization import Organization
from app.reports import repository as repo
from app.reports.schemas import MonthHours, StatsRead

MAX_RANGE_DAYS = 3660


def local_midnight(day: date) -> datetime:
    """The start of a local (Asia/Shanghai) day as an aware datetime."""
    return datetime.combine(day, time.min, tzinfo=clock.LOCAL_TZ)


def resolve_range(first: date | None, last: date | None) -> tuple[date, date]:
    """Defaults: 1 January of the local year to today; at most ten years."""
    today = clock.local_today()
    last = last or today
    first = first or date(last.year, 1, 1)
    if first > last:
        raise ValidationFailed("from", text("起始日期不能晚于结束日期", "`from` is after `to`"))
    if (last - first).days > MAX_RANGE_DAYS:
        raise ValidationFailed("from", text("时间范围过长", "The range is too long"))
    return first, last


async def org_stats(
    session: AsyncSession, org: Organization, first: date | None, last: date | None
) -> StatsRead:
    """The figures of `org`'s subtree over [first, last] (the caller is already known to
    read it: an officer over it or a city client with `stats:read`)."""
    first, last = resolve_range(first, last)
    starts, ends = local_midnight(first), local_midnight(last + timedelta(days=1))
    await repo.prefer_custom_plans(session)
    counts = await repo.stats_counts(session, org.path, starts, ends, clock.now())
    hours = await repo.stats_hours(session, org.path, first, last)
    rate = (
        round(counts.ended_attendances / counts.ended_signups, 4) if counts.ended_signups else None
    )
    return StatsRead(
        org_id=org.id,
        from_=first,
        to=last,
        members=counts.members,
        floating_members=counts.floating_members,
        pending_checkins=counts.pending_checkins,
        pending_contributions=counts.pending_contributions,
        activities=counts.activities,
        signups=counts.signups,
        attendances=counts.attendances,
        attendance_rate=rate,
        contribution_hours=[
            MonthHours(month=r.month, post=r.post, hours=(r.half_hours or 0) / 2, count=r.records)
            for r in hours
        ],
    )
