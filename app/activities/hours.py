"""The service hours attendance credits (谁组织谁记录), and the two limits they keep.

- Time is counted once.  An activity credits at most the part of its own time not already
  covered by activities the member holds a credit for: attending two activities at the same
  hours credits those hours once (the union of the intervals), not twice.  The credit is
  `min(service_hours, uncovered time)`, in whole half-hours, rounded down.  Credits are
  weighed in the order they are written; taking one back does not enlarge the others.
- At most 24 approved hours a day across all sources (app/contributions/rules): the credit is
  clipped to what is left of its day (the activity's local date), never refused: attendance is
  a fact.

Both are read under the member-day locks of every local date the activity's time touches, so
that two credits whose times overlap (they share such a date) are written one after the
other, each seeing the other; a manual approval takes the same locks.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities.repository import attendance as repo
from app.contributions import rules as daily
from app.core import clock
from app.models.activity import Activity, ActivityCredit

HALF_HOUR = 1800


def local_dates(starts_at: datetime, ends_at: datetime) -> list[date]:
    """Every local (Asia/Shanghai) date [starts_at, ends_at] touches."""
    first = starts_at.astimezone(clock.LOCAL_TZ).date()
    last = ends_at.astimezone(clock.LOCAL_TZ).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def uncovered_seconds(
    starts_at: datetime, ends_at: datetime, others: list[tuple[datetime, datetime]]
) -> float:
    """The seconds of [starts_at, ends_at) that none of `others` covers."""
    clipped = sorted(
        (max(s, starts_at), min(e, ends_at)) for s, e in others if s < ends_at and e > starts_at
    )
    covered = 0.0
    run_start: datetime | None = None
    run_end: datetime | None = None
    for s, e in clipped:
        if run_end is None or s > run_end:
            if run_start is not None and run_end is not None:
                covered += (run_end - run_start).total_seconds()
            run_start, run_end = s, e
        elif e > run_end:
            run_end = e
    if run_start is not None and run_end is not None:
        covered += (run_end - run_start).total_seconds()
    return (ends_at - starts_at).total_seconds() - covered


async def credit(session: AsyncSession, activity: Activity, user_id: uuid.UUID) -> float:
    """Credit the member's hours for attending `activity`, once; the hours credited (0 when
    the time was already credited or the day is full)."""
    existing = await repo.credit_of(session, activity.id, user_id)
    if existing is not None:
        return existing.hours
    if activity.service_hours <= 0:
        return 0.0
    day = activity.starts_at.astimezone(clock.LOCAL_TZ).date()
    room = await daily.credit_room(
        session, user_id, day, lock_also=local_dates(activity.starts_at, activity.ends_at)
    )
    # Under the locks now: a concurrent credit of this very activity has committed or waits.
    existing = await repo.credit_of(session, activity.id, user_id)
    if existing is not None:
        return existing.hours
    others = await repo.credited_intervals(
        session, user_id, activity.starts_at, activity.ends_at, exclude=activity.id
    )
    free = int(uncovered_seconds(activity.starts_at, activity.ends_at, others) // HALF_HOUR)
    half_hours = min(round(activity.service_hours * 2), free, room)
    if half_hours <= 0:
        return 0.0
    hours = half_hours / 2
    row = ActivityCredit(
        activity_id=activity.id,
        user_id=user_id,
        org_id=activity.org_id,
        post=activity.post,
        hours=hours,
        occurred_on=day,
        status="approved",
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Credited by a concurrent request for the same member: once is the rule.
        again = await repo.credit_of(session, activity.id, user_id)
        return again.hours if again is not None else 0.0
    return hours
