"""Officers of an organization (secretary, deputy, worker): who serves it, appointing one and
removing one.  Officers of the organization or above read the list; appointing and removing
belong to an officer of an organization strictly above it, or an admin."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Principal, Scope, load_org_in_scope, require_officer_above
from app.core.audit import audit
from app.core.errors import AppError, NotFound, ValidationFailed, register_codes
from app.core.i18n import text
from app.core.outbox import record_event
from app.core.pagination import Page, PageParams, page_of
from app.models.organization import Officer
from app.models.user import User
from app.orgs import repository as repo
from app.orgs.schemas import OfficerCreate, OfficerRead
from app.orgs.views import officer_read

register_codes(
    {
        "officer_exists": (
            409,
            "该用户已是此组织的工作人员",
            "The user already serves this organization",
        ),
    }
)


async def list_officers(
    session: AsyncSession, scope: Scope, org_id: uuid.UUID, params: PageParams
) -> Page[OfficerRead]:
    """The officers of `org_id`, for a caller whose officer `scope` covers it."""
    org = await load_org_in_scope(session, org_id, scope)
    rows = await repo.officers_page(session, org.id, params)
    items, next_cursor = page_of(rows, params, lambda r: (r.created_at, r.id))
    return Page(items=[officer_read(r) for r in items], next_cursor=next_cursor)


async def appoint_officer(
    session: AsyncSession, actor: Principal, org_id: uuid.UUID, data: OfficerCreate
) -> OfficerRead:
    org = await require_officer_above(session, actor, org_id)
    user = await session.get(User, data.user_id)
    if user is None or not user.is_active:
        raise ValidationFailed("user_id", text("用户不存在", "No such user"))
    officer = Officer(
        id=uuid.uuid4(),
        org_id=org.id,
        user_id=user.id,
        role=data.role,
        appointed_by=data.appointed_by,
    )
    try:
        async with session.begin_nested():
            session.add(officer)
    except IntegrityError as exc:  # uq_officers_org_id_user_id: no read-then-write
        raise AppError("officer_exists") from exc
    audit(
        session,
        action="org.officer_appointed",
        object_type="officer",
        object_id=officer.id,
        org_id=org.id,
        actor_id=actor.user_id,
        to_state=data.role,
    )
    record_event(
        session,
        "org.officer_appointed",
        {
            "org_id": str(org.id),
            "officer_id": str(officer.id),
            "user_id": str(user.id),
            "role": str(data.role),
        },
        aggregate_id=str(org.id),
    )
    return officer_read(await repo.officer_row(session, officer.id))


async def remove_officer(
    session: AsyncSession, actor: Principal, org_id: uuid.UUID, officer_id: uuid.UUID
) -> None:
    org = await require_officer_above(session, actor, org_id)
    # Filtered by the organization the caller may act on: another one's officer is a 404.
    officer = await repo.get_officer(session, org.id, officer_id)
    if officer is None:
        raise NotFound()
    await session.delete(officer)
    await session.flush()
    audit(
        session,
        action="org.officer_removed",
        object_type="officer",
        object_id=officer.id,
        org_id=org.id,
        actor_id=actor.user_id,
        from_state=officer.role,
    )
    record_event(
        session,
        "org.officer_removed",
        {"org_id": str(org.id), "officer_id": str(officer.id), "user_id": str(officer.user_id)},
        aggregate_id=str(org.id),
    )
