"""双岗位: the rules and the state machine of contributions.

States (API.md): pending → approved | rejected | returned | withdrawn; returned → pending
(edited and resubmitted) | withdrawn.  Anything else is 409 `invalid_transition`.  Every change
is one conditional UPDATE (… WHERE status = :from), so that of two concurrent actors exactly one
wins; decisions and submissions go to the audit log and the outbox in the same transaction.

The daily limit (24 hours per member and day, activity credits included) is checked under the
member-day lock (repository.lock_day): the lock serialises everyone adding hours to that day,
and the sum is read after it is taken, so two concurrent submissions cannot both pass.
Credits are written by the activities module without this lock; attendance is a fact, so a
credit is never refused, and it counts against any manual record submitted later.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Scope
from app.config import get_settings
from app.contributions import categories
from app.contributions import repository as repo
from app.contributions.media import EXTENSIONS, Checked
from app.contributions.schemas import (
    AttachmentRead,
    CategoriesRead,
    CategoryRead,
    ContributionCreate,
    ContributionRead,
    ContributionUpdate,
    OrgRef,
    PostCategories,
    PostTotal,
    SummaryCell,
    SummaryRead,
    half_hours_of,
)
from app.contributions.storage import Storage
from app.core import clock
from app.core.audit import audit
from app.core.errors import (
    AppError,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    register_codes,
)
from app.core.i18n import current_lang, text
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, page_of
from app.models.activity import Post
from app.models.contribution import (
    MAX_ATTACHMENTS,
    Contribution,
    ContributionAttachment,
    ContributionStatus,
)
from app.models.user import User

register_codes(
    {
        "contribution_org_invalid": (
            422,
            "只能记录在已登记报到通过的组织或组织关系所在组织",
            "Use an organization where you are registered (approved) or your record organization",
        ),
        "daily_hours_exceeded": (
            422,
            "同一天累计时长不能超过 24 小时（含活动时长）",
            "At most 24 hours a day, activity credits included",
        ),
        "attachment_limit": (
            409,
            "每条记录最多上传 9 个附件",
            "At most 9 attachments per record",
        ),
    }
)

OBJECT_TYPE = "contribution"
MAX_HALF_HOURS_PER_DAY = 48
EDITABLE = (ContributionStatus.pending, ContributionStatus.returned)

_TOPICS: dict[ContributionStatus, str] = {
    ContributionStatus.pending: "contribution.submitted",
    ContributionStatus.approved: "contribution.approved",
    ContributionStatus.rejected: "contribution.rejected",
    ContributionStatus.returned: "contribution.returned",
    ContributionStatus.withdrawn: "contribution.withdrawn",
}


def _record(
    session: AsyncSession,
    *,
    record_id: uuid.UUID,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    actor_id: uuid.UUID,
    from_state: str | None,
    to_state: ContributionStatus,
    comment: str | None = None,
) -> None:
    """Audit entry and outbox event of one change (ids and states only in the event)."""
    topic = _TOPICS[to_state]
    audit(
        session,
        action=topic,
        object_type=OBJECT_TYPE,
        object_id=record_id,
        org_id=org_id,
        actor_id=actor_id,
        from_state=from_state,
        to_state=to_state.value,
        comment=comment,
    )
    record_event(
        session,
        topic,
        {
            "contribution_id": str(record_id),
            "org_id": str(org_id),
            "user_id": str(user_id),
            "actor_id": str(actor_id),
            "from_state": from_state,
            "to_state": to_state.value,
        },
        aggregate_id=str(record_id),
    )


# --- shaping ----------------------------------------------------------------------------------


def _hours(half_hours: int | None) -> float:
    return (half_hours or 0) / 2


def _record_fields(row: Any) -> dict[str, Any]:
    """What the member's and the officer's views of a record share."""
    return {
        "id": row.id,
        "source": row.source,
        "status": row.status,
        "post": row.post,
        "category": row.category,
        "title": row.title,
        "description": row.description,
        "occurred_on": row.occurred_on,
        "hours": _hours(row.half_hours),
        "org": OrgRef(id=row.org_id, name=row.org_name),
        "activity_id": row.activity_id,
        "attachment_count": row.attachment_count,
        "submitted_at": row.submitted_at,
        "decided_at": row.decided_at,
        "decision_comment": row.decision_comment,
    }


def _read(row: Any) -> ContributionRead:
    return ContributionRead(**_record_fields(row))


def category_list() -> CategoriesRead:
    english = current_lang.get() == "en"
    post_names = {
        Post.enterprise: ("企业职责岗", "Enterprise duty post"),
        Post.community: ("社会义务岗", "Social service post"),
    }
    posts = []
    for post, items in categories.CATEGORIES.items():
        zh, en = post_names[post]
        posts.append(
            PostCategories(
                post=post,
                name=en if english else zh,
                name_zh=zh,
                name_en=en,
                categories=[
                    CategoryRead(
                        code=c.code,
                        name=c.name_en if english else c.name_zh,
                        name_zh=c.name_zh,
                        name_en=c.name_en,
                    )
                    for c in items
                ],
            )
        )
    return CategoriesRead(posts=posts)


# --- the rules --------------------------------------------------------------------------------


def _check_category(post: str, category: str) -> None:
    if not categories.is_valid(post, category):
        raise ValidationFailed(
            "category",
            text(
                "该岗位下没有此类别", "Not a category of this post (see /contribution-categories)"
            ),
        )


def _check_day(day: date) -> None:
    today = clock.local_today()
    if day > today:
        raise ValidationFailed("occurred_on", text("日期不能晚于今天", "The date is in the future"))
    limit = get_settings().contribution_max_age_days
    if day < today - timedelta(days=limit):
        raise ValidationFailed(
            "occurred_on",
            text(f"只能记录 {limit} 天内的事项", f"Only the last {limit} days can be logged"),
        )


async def _check_org(session: AsyncSession, user: User, org_id: uuid.UUID) -> str:
    found = await repo.permitted_org(session, user, org_id)
    if found is None:
        raise ValidationFailed(
            "org_id",
            text(
                "须为已登记报到通过的组织或组织关系所在组织",
                "Use an organization where you are registered or your record organization",
            ),
            code="contribution_org_invalid",
        )
    return found[1]


async def _check_daily_limit(
    session: AsyncSession,
    user_id: uuid.UUID,
    day: date,
    half_hours: int,
    exclude: uuid.UUID | None = None,
) -> None:
    await repo.lock_day(session, user_id, day)
    already = await repo.day_half_hours(session, user_id, day, exclude)
    if already + half_hours > MAX_HALF_HOURS_PER_DAY:
        left = max(0, MAX_HALF_HOURS_PER_DAY - already) / 2
        raise ValidationFailed(
            "hours",
            text(f"当天最多还能记录 {left:g} 小时", f"At most {left:g} more hours on that day"),
            code="daily_hours_exceeded",
        )


# --- members ----------------------------------------------------------------------------------


async def submit(session: AsyncSession, user: User, data: ContributionCreate) -> ContributionRead:
    _check_category(data.post, data.category)
    _check_day(data.occurred_on)
    org_name = await _check_org(session, user, data.org_id)
    half_hours = half_hours_of(data.hours)
    await _check_daily_limit(session, user.id, data.occurred_on, half_hours)
    now = clock.now()
    record = Contribution(
        id=uuid.uuid4(),
        user_id=user.id,
        org_id=data.org_id,
        post=data.post.value,
        category=data.category,
        title=data.title,
        description=data.description or None,
        occurred_on=data.occurred_on,
        half_hours=half_hours,
        status=ContributionStatus.pending.value,
        possible_duplicate=await repo.has_credit(session, user.id, data.occurred_on),
        attachment_count=0,
        submitted_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    await session.flush()
    _record(
        session,
        record_id=record.id,
        org_id=record.org_id,
        user_id=user.id,
        actor_id=user.id,
        from_state=None,
        to_state=ContributionStatus.pending,
    )
    return ContributionRead(
        id=record.id,
        source="manual",
        status=ContributionStatus.pending,
        post=data.post,
        category=record.category,
        title=record.title,
        description=record.description,
        occurred_on=record.occurred_on,
        hours=_hours(half_hours),
        org=OrgRef(id=record.org_id, name=org_name),
        attachment_count=0,
        submitted_at=now,
        decided_at=None,
        decision_comment=None,
    )


async def get_mine(
    session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID
) -> ContributionRead:
    row = await repo.mine_one(session, user_id, record_id)
    if row is None:
        raise NotFound()
    return _read(row)


async def list_mine(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    status: ContributionStatus | None,
    post: Post | None,
    year: int | None,
    params: PageParams,
) -> Page[ContributionRead]:
    rows = await repo.mine_page(
        session,
        user_id,
        status=status.value if status else None,
        post=post.value if post else None,
        year=year,
        params=params,
    )
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_read(r) for r in items], next_cursor=cursor)


async def summary(session: AsyncSession, user_id: uuid.UUID, year: int) -> SummaryRead:
    rows = await repo.summary(session, user_id, year)
    cells = [
        SummaryCell(post=r.post, status=r.status, count=r.n, hours=_hours(r.hh))
        for r in sorted(rows, key=lambda r: (r.post, r.status))
    ]
    totals = []
    for post in Post:
        approved = [c for c in cells if c.post == post and c.status == ContributionStatus.approved]
        totals.append(
            PostTotal(
                post=post,
                approved_hours=sum(c.hours for c in approved),
                approved_count=sum(c.count for c in approved),
            )
        )
    return SummaryRead(year=year, items=cells, totals=totals)


async def update(
    session: AsyncSession, user: User, record_id: uuid.UUID, data: ContributionUpdate
) -> ContributionRead:
    record = await repo.own(session, user.id, record_id)
    if record is None:
        raise NotFound()
    from_state = record.status
    if from_state not in EDITABLE:
        raise InvalidTransition()
    changes = data.model_dump(exclude_unset=True)
    for name in ("post", "category", "title", "occurred_on", "hours", "org_id"):
        if name in changes and changes[name] is None:
            raise ValidationFailed(name, text("不能为空", "May not be null"))
    post = str(changes.get("post", record.post))
    category = changes.get("category", record.category)
    occurred_on: date = changes.get("occurred_on", record.occurred_on)
    half_hours = half_hours_of(changes["hours"]) if "hours" in changes else record.half_hours
    org_id: uuid.UUID = changes.get("org_id", record.org_id)
    if "post" in changes or "category" in changes:
        _check_category(post, category)
    if "occurred_on" in changes:
        _check_day(occurred_on)
    if "org_id" in changes:
        await _check_org(session, user, org_id)
    if occurred_on != record.occurred_on or half_hours > record.half_hours:
        await _check_daily_limit(session, user.id, occurred_on, half_hours, exclude=record.id)
    values: dict[str, Any] = {
        "post": post,
        "category": category,
        "title": changes.get("title", record.title),
        "description": changes.get("description", record.description) or None,
        "occurred_on": occurred_on,
        "half_hours": half_hours,
        "org_id": org_id,
        "status": ContributionStatus.pending.value,
        "possible_duplicate": await repo.has_credit(session, user.id, occurred_on),
    }
    if from_state == ContributionStatus.returned:
        values["submitted_at"] = clock.now()
    if not await repo.change_own(session, record.id, user.id, from_state, values):
        raise InvalidTransition()  # decided or withdrawn meanwhile
    if from_state == ContributionStatus.returned:
        _record(
            session,
            record_id=record.id,
            org_id=org_id,
            user_id=user.id,
            actor_id=user.id,
            from_state=from_state,
            to_state=ContributionStatus.pending,
            comment="resubmitted",
        )
    else:
        audit(
            session,
            action="contribution.updated",
            object_type=OBJECT_TYPE,
            object_id=record.id,
            org_id=org_id,
            actor_id=user.id,
            from_state=from_state,
            to_state=from_state,
        )
    return await get_mine(session, user.id, record.id)


async def withdraw(session: AsyncSession, user: User, record_id: uuid.UUID) -> ContributionRead:
    record = await repo.own(session, user.id, record_id)
    if record is None:
        raise NotFound()
    from_state = record.status
    if from_state not in EDITABLE:
        raise InvalidTransition()
    values = {"status": ContributionStatus.withdrawn.value}
    if not await repo.change_own(session, record.id, user.id, from_state, values):
        raise InvalidTransition()
    _record(
        session,
        record_id=record.id,
        org_id=record.org_id,
        user_id=user.id,
        actor_id=user.id,
        from_state=from_state,
        to_state=ContributionStatus.withdrawn,
    )
    return await get_mine(session, user.id, record.id)


# --- evidence ---------------------------------------------------------------------------------


async def check_attachable(session: AsyncSession, user_id: uuid.UUID, record_id: uuid.UUID) -> None:
    """Before an upload is read: the member's own record, editable, with room for one more."""
    record = await repo.own(session, user_id, record_id)
    if record is None:
        raise NotFound()
    if record.status not in EDITABLE:
        raise InvalidTransition()
    if record.attachment_count >= MAX_ATTACHMENTS:
        raise AppError("attachment_limit")


async def add_attachment(
    session: AsyncSession,
    storage: Storage,
    user: User,
    record_id: uuid.UUID,
    checked: Checked,
    source: Any,
    original_name: str | None,
) -> AttachmentRead:
    if not await repo.reserve_attachment(session, record_id, user.id, MAX_ATTACHMENTS):
        await check_attachable(session, user.id, record_id)
        raise InvalidTransition()
    attachment_id = uuid.uuid4()
    key = f"contributions/{record_id.hex}/{attachment_id.hex}.{EXTENSIONS[checked.content_type]}"
    attachment = ContributionAttachment(
        id=attachment_id,
        contribution_id=record_id,
        storage_key=key,
        content_type=checked.content_type,
        size=checked.size,
        sha256=checked.sha256,
        original_name=original_name,
        created_at=clock.now(),
    )
    session.add(attachment)
    await session.flush()
    # Stored last: a failure here rolls the row back.  (A failed commit afterwards can leave
    # an unreferenced file behind; it is never served, since only rows are.)
    await storage.put_file(key, source)
    return AttachmentRead(
        id=attachment.id,
        content_type=attachment.content_type,
        size=attachment.size,
        sha256=attachment.sha256,
        original_name=attachment.original_name,
        created_at=attachment.created_at,
    )


async def _can_read_record(
    session: AsyncSession, user: User, owner_id: uuid.UUID, path: str, scope_of: Any
) -> bool:
    if owner_id == user.id:
        return True
    scope: Scope = await scope_of()
    return scope.covers_path(path)


async def attachment_for_download(
    session: AsyncSession, user: User, record_id: uuid.UUID, attachment_id: uuid.UUID, scope_of: Any
) -> Any:
    """The attachment row for the owner or an officer in scope; 404 for anyone else."""
    row = await repo.attachment_with_owner(session, record_id, attachment_id)
    if row is None or not await _can_read_record(session, user, row.user_id, row.path, scope_of):
        raise NotFound()
    return row


async def attachments_list(
    session: AsyncSession, user: User, record_id: uuid.UUID, scope_of: Any
) -> list[AttachmentRead]:
    found = await repo.record_owner_path(session, record_id)
    if found is None or not await _can_read_record(
        session, user, found.user_id, found.path, scope_of
    ):
        raise NotFound()
    rows = await repo.attachments_of(session, record_id)
    return [
        AttachmentRead(
            id=r.id,
            content_type=r.content_type,
            size=r.size,
            sha256=r.sha256,
            original_name=r.original_name,
            created_at=r.created_at,
        )
        for r in rows
    ]
