"""登记报到: the rules and the state machine of check-ins.

States (API.md): pending → approved | rejected | withdrawn; approved → left.  Every change is
one conditional UPDATE (… WHERE status = :from), so that of two concurrent deciders exactly one
wins; an officer's decision also requires, in the same UPDATE, that the check-in is not the
officer's own (403 `review_own_forbidden`, as for contributions).  Every change is recorded in
the audit log and as an outbox event in the same transaction.  Nothing here commits: the
request's session does, after the endpoint returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Scope
from app.checkins import repository as repo
from app.checkins.schemas import (
    AuditEntryRead,
    CheckinCreate,
    CheckinQueueItem,
    CheckinRead,
    MemberCard,
    MemberRead,
    OrgSummary,
    RecordOrg,
    ReviewResponse,
    ReviewResult,
)
from app.core import clock
from app.core.audit import audit
from app.core.crypto import mask_phone
from app.core.errors import (
    AppError,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    register_codes,
)
from app.core.i18n import text
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, page_of
from app.core.review import Outcome
from app.models.checkin import Checkin
from app.models.enums import CheckinStatus, OrgKind
from app.models.organization import Organization
from app.models.user import User

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

OBJECT_TYPE = "checkin"
TARGET_KINDS = frozenset({OrgKind.regional, OrgKind.enterprise, OrgKind.building})

Decision = Literal["approve", "reject"]
_DECISIONS: dict[Decision, CheckinStatus] = {
    "approve": CheckinStatus.approved,
    "reject": CheckinStatus.rejected,
}


def _event(to_state: CheckinStatus) -> str:
    """The audit action and outbox topic of a change into `to_state`."""
    return {
        CheckinStatus.pending: "checkin.submitted",
        CheckinStatus.approved: "checkin.approved",
        CheckinStatus.rejected: "checkin.rejected",
        CheckinStatus.withdrawn: "checkin.withdrawn",
        CheckinStatus.left: "checkin.left",
    }[to_state]


def _record(
    session: AsyncSession,
    *,
    checkin_id: uuid.UUID,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    actor_id: uuid.UUID,
    from_state: CheckinStatus | None,
    to_state: CheckinStatus,
    comment: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """The audit entry and the outbox event of one change (ids and states, no personal data
    in the event)."""
    action = _event(to_state)
    audit(
        session,
        action=action,
        object_type=OBJECT_TYPE,
        object_id=checkin_id,
        org_id=org_id,
        actor_id=actor_id,
        from_state=from_state,
        to_state=to_state,
        comment=comment,
    )
    payload: dict[str, Any] = {
        "checkin_id": str(checkin_id),
        "org_id": str(org_id),
        "user_id": str(user_id),
        "actor_id": str(actor_id),
        "from_state": from_state,
        "to_state": to_state,
    }
    payload.update(extra or {})
    record_event(session, action, payload, aggregate_id=str(checkin_id))


# --- shaping rows -----------------------------------------------------------------------------


def _org(row: Any) -> OrgSummary:
    return OrgSummary(id=row.org_id, name=row.org_name, kind=row.org_kind)


def _checkin_fields(row: Any) -> dict[str, Any]:
    """What the member's and the officer's views of a check-in share."""
    return {
        "id": row.id,
        "org": _org(row),
        "status": row.status,
        "note": row.note,
        "floating": row.floating,
        "submitted_at": row.created_at,
        "decided_at": row.decided_at,
        "decision_comment": row.decision_comment,
        "ended_at": row.ended_at,
    }


def _mine(row: Any) -> CheckinRead:
    return CheckinRead(**_checkin_fields(row))


def _queue_item(row: Any) -> CheckinQueueItem:
    return CheckinQueueItem(
        **_checkin_fields(row),
        member=MemberCard(
            id=row.user_id,
            name=row.user_name,
            phone_masked=mask_phone(row.user_phone),
            party_status=row.user_party_status,
            employer=row.user_employer,
            record_org=RecordOrg(id=row.record_org_id, name=row.record_org_name),
        ),
        decided_by=row.decided_by,
    )


def _member(row: Any) -> MemberRead:
    return MemberRead(
        checkin_id=row.id,
        user_id=row.user_id,
        name=row.user_name,
        phone_masked=mask_phone(row.user_phone),
        id_number_masked=row.user_id_number_masked,
        gender=row.user_gender,
        party_status=row.user_party_status,
        employer=row.user_employer,
        post_title=row.user_post_title,
        record_org=RecordOrg(id=row.record_org_id, name=row.record_org_name),
        floating=row.floating,
        org=_org(row),
        registered_at=row.decided_at,
    )


def _audit_entry(row: Any) -> AuditEntryRead:
    return AuditEntryRead(
        id=row.id,
        created_at=row.created_at,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        org=_org(row),
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        actor_client_id=row.actor_client_id,
        from_state=row.from_state,
        to_state=row.to_state,
        comment=row.comment,
    )


# --- submitting ---------------------------------------------------------------------------------


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
    return not record_path.startswith(await repo.district_path(session, target))


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
    _record(
        session,
        checkin_id=checkin.id,
        org_id=target.id,
        user_id=user.id,
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


# --- the member's own -------------------------------------------------------------------------


async def list_mine(
    session: AsyncSession, user_id: uuid.UUID, params: PageParams
) -> Page[CheckinRead]:
    rows = await repo.mine_page(session, user_id, params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_mine(r) for r in items], next_cursor=cursor)


async def get_mine(session: AsyncSession, user_id: uuid.UUID, checkin_id: uuid.UUID) -> CheckinRead:
    row = await repo.mine_one(session, checkin_id, user_id)
    if row is None:
        raise NotFound()
    return _mine(row)


async def _owner_transition(
    session: AsyncSession,
    user_id: uuid.UUID,
    checkin_id: uuid.UUID,
    from_state: CheckinStatus,
    to_state: CheckinStatus,
) -> CheckinRead:
    owned = Checkin.user_id == user_id
    now = clock.now()
    changed = await repo.transition(
        session,
        [checkin_id],
        from_state=from_state,
        to_state=to_state,
        where=[owned],
        values={"ended_at": now, "updated_at": now},
    )
    if not changed:
        # Someone else's, or unknown: 404; the member's own in another state: 409.
        if not await repo.states(session, [checkin_id], owned):
            raise NotFound()
        raise InvalidTransition()
    (row,) = changed
    _record(
        session,
        checkin_id=row.id,
        org_id=row.org_id,
        user_id=user_id,
        actor_id=user_id,
        from_state=from_state,
        to_state=to_state,
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


# --- officers -----------------------------------------------------------------------------------


async def queue(
    session: AsyncSession, org: Organization, status: CheckinStatus | None, params: PageParams
) -> Page[CheckinQueueItem]:
    rows = await repo.queue_page(session, org.path, status, params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_queue_item(r) for r in items], next_cursor=cursor)


async def _decide_many(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: Decision,
    comment: str | None,
) -> Outcome:
    """Decide every pending one of `ids` within `scope` and not the actor's own, with one
    UPDATE; the outcome knows, for the others visible in scope, why they were not."""
    to_state = _DECISIONS[decision]
    visible = repo.in_scope(scope)
    now = clock.now()
    changed = await repo.transition(
        session,
        ids,
        from_state=CheckinStatus.pending,
        to_state=to_state,
        where=[visible, repo.not_owned_by(actor.id)],
        values={
            "decided_at": now,
            "decided_by": actor.id,
            "decision_comment": comment,
            "updated_at": now,
        },
    )
    for row in changed:
        _record(
            session,
            checkin_id=row.id,
            org_id=row.org_id,
            user_id=row.user_id,
            actor_id=actor.id,
            from_state=CheckinStatus.pending,
            to_state=to_state,
            comment=comment,
        )
    decided = frozenset(row.id for row in changed)
    rest = [i for i in ids if i not in decided]
    others = await repo.states(session, rest, visible) if rest else {}
    return Outcome(to_state, actor.id, decided, others)


async def decide(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    checkin_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
) -> CheckinQueueItem:
    """Approve or reject one pending check-in in the officer's subtree.

    Outside the subtree (or unknown): 404; the officer's own, pending: 403
    `review_own_forbidden`; not pending (also: lost a race): 409."""
    outcome = await _decide_many(session, actor, scope, [checkin_id], decision, comment)
    outcome.raise_unless_decided(checkin_id)
    row = await repo.queue_one(session, checkin_id, scope)
    assert row is not None
    return _queue_item(row)


async def review(
    session: AsyncSession,
    actor: User,
    scope: Scope,
    ids: Sequence[uuid.UUID],
    decision: Decision,
    comment: str | None,
) -> ReviewResponse:
    """A batch: a result per id, in the order given; one bad id does not sink the others."""
    if decision == "reject" and not comment:
        raise ValidationFailed(
            "comment", text("驳回时须填写理由", "A reason is required to reject")
        )
    outcome = await _decide_many(session, actor, scope, ids, decision, comment)
    results = []
    for checkin_id in ids:
        state = outcome.state_of(checkin_id)
        results.append(
            ReviewResult(
                id=checkin_id,
                ok=checkin_id in outcome.decided,
                status=CheckinStatus(state) if state is not None else None,
                code=outcome.code_of(checkin_id),
            )
        )
    return ReviewResponse(results=results)


async def members(
    session: AsyncSession,
    org: Organization,
    *,
    floating: bool | None,
    q: str | None,
    params: PageParams,
) -> Page[MemberRead]:
    q = (q or "").strip() or None
    rows = await repo.members_page(session, org.path, floating=floating, q=q, params=params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_member(r) for r in items], next_cursor=cursor)


async def audit_log(
    session: AsyncSession,
    org: Organization,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    params: PageParams,
) -> Page[AuditEntryRead]:
    rows = await repo.audit_page(session, org.path, action=action, actor_id=actor_id, params=params)
    items, cursor = page_of(rows, params, repo.cursor_key)
    return Page(items=[_audit_entry(r) for r in items], next_cursor=cursor)


__all__ = [
    "Decision",
    "audit_log",
    "decide",
    "get_mine",
    "leave",
    "list_mine",
    "members",
    "queue",
    "review",
    "submit",
    "withdraw",
]
