"""The rules a member's record must keep, checked when it is logged or edited.

- the category belongs to the post;
- the day is not in the future, nor older than the configured limit (the caller passes it);
- the organization is one where the member holds an approved check-in (the self-declared
  record organization of `PATCH /me` opens no organization's queue);
- at most 24 hours a day per member, activity credits included.

The daily limit holds twice, both times under the member-day lock (`repository.lock_day`), which
serialises everyone adding hours to that day, the sum being read after it is taken:
- when a record is logged or edited: its active records (pending, returned, approved) and
  credits of the day, at most 24 hours (`check_daily_limit`, 422 `daily_hours_exceeded`);
- when records are approved and when attendance credits hours: the *approved* hours of the day
  (approved records and credits, all sources) never exceed 24.  An approval that would pass it
  is refused (`admit_approvals`: 422 `daily_hours_exceeded`, or that code for its id in a
  batch); a credit is clipped to what is left of the day (`credit_room`), since attendance is
  a fact that a later manual record must make room for, not the other way round.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.contributions import categories
from app.contributions import repository as repo
from app.core import clock
from app.core.errors import AppError, ValidationFailed, register_codes
from app.core.i18n import text
from app.models.contribution import ContributionStatus
from app.models.user import User

register_codes(
    {
        "contribution_org_invalid": (
            422,
            "只能记录在已登记报到通过的组织",
            "Use an organization where you are registered (approved)",
        ),
        "daily_hours_exceeded": (
            422,
            "同一天累计时长不能超过 24 小时（含活动时长）",
            "At most 24 hours a day, activity credits included",
        ),
    }
)

MAX_HALF_HOURS_PER_DAY = 48
EDITABLE = (ContributionStatus.pending, ContributionStatus.returned)
"""The states in which the member may still edit, withdraw or add evidence."""


def check_category(post: str, category: str) -> None:
    if not categories.is_valid(post, category):
        raise ValidationFailed(
            "category",
            text(
                "该岗位下没有此类别", "Not a category of this post (see /contribution-categories)"
            ),
        )


def check_day(day: date, max_age_days: int) -> None:
    today = clock.local_today()
    if day > today:
        raise ValidationFailed("occurred_on", text("日期不能晚于今天", "The date is in the future"))
    if day < today - timedelta(days=max_age_days):
        raise ValidationFailed(
            "occurred_on",
            text(
                f"只能记录 {max_age_days} 天内的事项",
                f"Only the last {max_age_days} days can be logged",
            ),
        )


async def check_org(session: AsyncSession, user: User, org_id: uuid.UUID) -> str:
    """The organization's name when the member may log a record there."""
    found = await repo.permitted_org(session, user, org_id)
    if found is None:
        raise ValidationFailed(
            "org_id",
            text(
                "须为已登记报到通过的组织",
                "Use an organization where your check-in has been approved",
            ),
            code="contribution_org_invalid",
        )
    return found.name


async def check_daily_limit(
    session: AsyncSession,
    user_id: uuid.UUID,
    day: date,
    half_hours: int,
    exclude: uuid.UUID | None = None,
) -> None:
    """Take the member-day lock, then refuse more than 24 hours on `day` (the record
    `exclude`, being edited, not counted)."""
    await repo.lock_day(session, user_id, day)
    already = await repo.day_half_hours(session, user_id, day, exclude)
    if already + half_hours > MAX_HALF_HOURS_PER_DAY:
        left = max(0, MAX_HALF_HOURS_PER_DAY - already) / 2
        raise ValidationFailed(
            "hours",
            text(f"当天最多还能记录 {left:g} 小时", f"At most {left:g} more hours on that day"),
            code="daily_hours_exceeded",
        )


async def credit_room(
    session: AsyncSession, user_id: uuid.UUID, day: date, lock_also: Iterable[date] = ()
) -> int:
    """Take the member-day locks of `day` (and of `lock_also`), then the half-hours still free
    on `day` for approved hours: what a credit may add."""
    await repo.lock_days(session, [(user_id, d) for d in {day, *lock_also}])
    approved = await repo.approved_half_hours(session, [(user_id, day)])
    return max(0, MAX_HALF_HOURS_PER_DAY - approved[(user_id, day)])


def _too_many(left: int) -> AppError:
    hours = left / 2
    return ValidationFailed(
        "hours",
        text(
            f"当天已审核通过的时长（含活动时长）最多还能增加 {hours:g} 小时",
            f"At most {hours:g} more approved hours on that day, activity credits included",
        ),
        code="daily_hours_exceeded",
    )


async def admit_approvals(
    session: AsyncSession, to_state: str, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, AppError]:
    """The review mechanism's limit on approving records (`Reviewable.admit`): take the
    member-day locks of the records, then refuse, in the order given, each one that would
    bring its member's approved hours of the day past 24."""
    if to_state != ContributionStatus.approved.value or not ids:
        return {}
    found = {row.id: row for row in await repo.days_of(session, ids)}
    keys = [(row.user_id, row.occurred_on) for row in found.values()]
    await repo.lock_days(session, keys)
    approved = await repo.approved_half_hours(session, keys)
    refused: dict[uuid.UUID, AppError] = {}
    for record_id in ids:
        row = found[record_id]
        key = (row.user_id, row.occurred_on)
        if approved[key] + row.half_hours > MAX_HALF_HOURS_PER_DAY:
            refused[record_id] = _too_many(max(0, MAX_HALF_HOURS_PER_DAY - approved[key]))
        else:
            approved[key] += row.half_hours
    return refused
