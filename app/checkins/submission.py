"""登记报到 by members: submitting a check-in, reading one's own, withdrawing a pending one and
leaving an organization one is registered with.

Every change is one conditional UPDATE (… WHERE status = :from) through the review mechanism
(app/review), recorded in the audit log and as an outbox event in the same transaction.
Nothing here commits: the request's session does, after the endpoint returns.
"""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import review
from app.authz import path_within
from app.checkins import repository as repo
from app.checkins.reviewable import CHECKINS
from app.checkins.schemas import CheckinCreate, CheckinRead, OrgSummary
from app.checkins.shaping import mine
from app.core import clock
from app.core.errors import AppError, InvalidTransition, NotFound, register_codes
from app.core.i18n import text
from app.core.pagination import Page, PageParams, page_of
from app.models.checkin import Checkin
from app.models.enums import CheckinStatus, OrgKind
from app.models.organization import Organization
from app.models.user import User
from app.orgs.tree import district_of

register_codes(
    {
        "checkin_exists": (
            409,
            "你已在该组织登记报到（待审核或已通过）",
            "You already have a pending or approved check-in at this organization",
        ),
        "checkin_target_invalid": (
            422,
            "只能向区域性党组织或其下的企业、楼宇党组织登记报到",
            "Check in to a regional organization or an enterprise or building one under it",
        ),
        "profile_incomplete": (
            422,
            "请先完善个人资料再登记报到",
            "Complete your profile before checking in",
        ),
    }
)

TARGET_KINDS = frozenset({OrgKind.regional, OrgKind.enterprise, OrgKind.building})


def missing_profile_fields(user: User) -> list[dict[str, str]]:
    """What a member must fill in before checking in: name, phone, party status and a record
    organization (one of ours, or a free-text one elsewhere)."""
    missing: list[dict[str, str]] = []
    if not (user.name or "").strip():
        missing.append({"field": "name", "message": text("请填写姓名", "Your name is required")})
    if not (user.phone or "").strip():
        missing.append({"field": "phone", "message": text("请填写手机号", "A phone is required")})
    if not user.party_status:
        missing.append(
            {
                "field": "party_status",
                "message": text("请选择正式党员或预备党员", "Full or probationary member?"),
            }
        )
    if user.record_org_id is None and not (user.record_org_name or "").strip():
        missing.append(
            {
                "field": "record_org_id",
                "message": text(
                    "请填写组织关系所在（本系统组织或其他组织名称）",
                    "Name your record organization (record_org_id or record_org_name)",
                ),
            }
        )
    return missing


async def is_floating(session: AsyncSession, user: User, target: Organization) -> bool:
    """流动党员: the member's record organization lies outside the district of the target.

    A free-text record organization is somewhere else by definition."""
    if user.record_org_id is None:
        return True
    record_path = await repo.org_path(session, user.record_org_id)
    if record_path is None:
        return True
    district = await district_of(session, target.path)
    return not path_within(record_path, district.path)


async def submit(session: AsyncSession, user: User, data: CheckinCreate) -> CheckinRead:
    target = await repo.get_org(session, data.org_id)
    if target is None:
        raise NotFound(detail=text("组织不存在", "No such organization"))
    if target.kind not in TARGET_KINDS:
        raise AppError(
            "checkin_target_invalid",
            errors=[
                {
                    "field": "org_id",
                    "message": text(
                        "该组织不接受登记报到", "This organization does not take check-ins"
                    ),
                }
            ],
        )
    missing = missing_profile_fields(user)
    if missing:
        raise AppError("profile_incomplete", errors=missing)

    checkin = Checkin(
        user_id=user.id,
        org_id=target.id,
        status=CheckinStatus.pending,
        note=data.note or None,
        floating=await is_floating(session, user, target),
    )
    session.add(checkin)
    try:
        # The partial unique index decides, also between concurrent requests: no read first.
        await session.flush()
    except IntegrityError as exc:
        if repo.is_active_duplicate(exc):
            raise AppError("checkin_exists") from exc
        raise
    review.record_change(
        session,
        CHECKINS,
        review.Changed(checkin.id, target.id, user.id),
        actor_id=user.id,
        from_state=None,
        to_state=CheckinStatus.pending,
        extra={"floating": checkin.floating},
    )
    return CheckinRead(
        id=checkin.id,
        org=OrgSummary(id=target.id, name=target.name, kind=OrgKind(target.kind)),
        status=CheckinStatus.pending,
        note=checkin.note,
        floating=checkin.floating,
        submitted_at=checkin.created_at,
        decided_at=None,
        decision_comment=None,
        ended_at=None,
    )


async def list_mine(
    session: AsyncSession, user_id: uuid.UUID, params: PageParams
) -> Page[CheckinRead]:
    rows = await repo.mine_page(session, user_id, params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[mine(r) for r in items], next_cursor=cursor)


async def get_mine(session: AsyncSession, user_id: uuid.UUID, checkin_id: uuid.UUID) -> CheckinRead:
    row = await repo.mine_one(session, checkin_id, user_id)
    if row is None:
        raise NotFound()
    return mine(row)


async def _owner_transition(
    session: AsyncSession,
    user_id: uuid.UUID,
    checkin_id: uuid.UUID,
    from_state: CheckinStatus,
    to_state: CheckinStatus,
) -> CheckinRead:
    owned = CHECKINS.owner == user_id
    now = clock.now()
    changed = await review.transition(
        session,
        CHECKINS,
        [checkin_id],
        from_state=from_state,
        to_state=to_state,
        where=[owned],
        values={Checkin.ended_at: now, Checkin.updated_at: now},
    )
    if not changed:
        # Someone else's, or unknown: 404; the member's own in another state: 409.
        if not await review.states(session, CHECKINS, [checkin_id], owned):
            raise NotFound()
        raise InvalidTransition()
    (record,) = changed
    review.record_change(
        session, CHECKINS, record, actor_id=user_id, from_state=from_state, to_state=to_state
    )
    return await get_mine(session, user_id, checkin_id)


async def withdraw(session: AsyncSession, user_id: uuid.UUID, checkin_id: uuid.UUID) -> CheckinRead:
    return await _owner_transition(
        session, user_id, checkin_id, CheckinStatus.pending, CheckinStatus.withdrawn
    )


async def leave(session: AsyncSession, user_id: uuid.UUID, checkin_id: uuid.UUID) -> CheckinRead:
    return await _owner_transition(
        session, user_id, checkin_id, CheckinStatus.approved, CheckinStatus.left
    )
