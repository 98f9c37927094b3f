"""Member accounts: registering one, and the member's own profile (`/me`): personal fields,
where the party record sits, the resident ID number (stored encrypted, found by a keyed
index, shown masked) and the organizations the member serves as an officer.

No commit here: the request's session commits once after the endpoint returns.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from app.config import Settings
from app.core.audit import audit
from app.core.crypto import blind_index, encrypt, mask_id_number
from app.core.errors import AppError, ValidationFailed
from app.core.i18n import text
from app.core.passwords import hash_password, require_strong_password
from app.core.throttle import hit_in, throttle_address
from app.identity.schemas import MeRead, MeUpdate, OfficeRead, RegisterIn
from app.models.enums import OfficerRole
from app.models.organization import Officer, Organization
from app.models.user import IdNumberClaim, User

ID_NUMBER_CONTEXT = "users.id_number"
DAY = 86400

_PLAIN_FIELDS = ("name", "gender", "party_status", "joined_party_on", "employer", "post_title")


# --- registering ---------------------------------------------------------------------------


async def register(
    session: AsyncSession,
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    address: str,
    data: RegisterIn,
) -> MeRead:
    """Create a member account.  Registration answers whether a phone is taken, so attempts
    are limited per client `address` (counted in the throttle's own transaction).  The
    password must be strong (422 `weak_password`)."""
    await throttle_address(factory, settings, action="register", address=address)
    await require_strong_password(
        data.password, min_score=settings.password_min_score, user_inputs=[data.phone, data.name]
    )
    taken = (
        await session.execute(select(User.id).where(User.phone == data.phone))
    ).scalar_one_or_none()
    if taken is not None:
        raise AppError("phone_taken")
    user = User(
        phone=data.phone,
        name=data.name,
        password_hash=await hash_password(data.password),
        is_admin=False,
        is_active=True,
        skills=[],
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # registered concurrently with the same phone
        raise AppError("phone_taken") from exc
    return to_read(user, offices=[])


# --- the profile ---------------------------------------------------------------------------


async def offices_of(session: AsyncSession, user_id: uuid.UUID) -> list[OfficeRead]:
    rows = await session.execute(
        select(Officer.org_id, Organization.name, Officer.role)
        .join(Organization, Organization.id == Officer.org_id)
        .where(Officer.user_id == user_id)
        .order_by(Organization.name, Officer.org_id)
    )
    return [
        OfficeRead(org_id=org_id, org_name=name, role=OfficerRole(role))
        for org_id, name, role in rows
    ]


def to_read(user: User, offices: list[OfficeRead]) -> MeRead:
    return MeRead.model_validate(
        {
            "id": user.id,
            "phone": user.phone,
            "name": user.name,
            "role": user.role,
            "gender": user.gender,
            "party_status": user.party_status,
            "joined_party_on": user.joined_party_on,
            "record_org_id": user.record_org_id,
            "record_org_name": user.record_org_name,
            "employer": user.employer,
            "post_title": user.post_title,
            "skills": list(user.skills or []),
            "id_number_masked": user.id_number_masked,
            "offices": offices,
            "created_at": user.created_at,
        }
    )


async def profile(session: AsyncSession, actor: User) -> MeRead:
    return to_read(actor, await offices_of(session, actor.id))


async def update_profile(
    session: AsyncSession, actor: User, data: MeUpdate, *, settings: Settings
) -> MeRead:
    """Apply the fields that were sent (null clears a field) and answer the new profile.
    Checks first, then writes.

    An ID number another account holds is answered exactly like a free one (see
    `_set_id_number`); requests that send an ID number are limited per account and day, so
    that the number of guesses stays small whatever the answer (429)."""
    sent = data.model_fields_set
    if sent:
        await _check_update(session, data)
        if "id_number" in sent and data.id_number is not None:
            await hit_in(
                session,
                f"id-number:user:{actor.id}",
                limit=settings.id_number_changes_per_day,
                window_seconds=DAY,
            )
        _apply_update(actor, data)
        if "id_number" in sent:
            await _set_id_number(session, actor, data.id_number)
        # PIPL: record who changed which personal fields (names only, never values).
        audit(
            session,
            action="profile.update",
            object_type="user",
            object_id=actor.id,
            org_id=None,
            actor_id=actor.id,
            comment=",".join(sorted(sent)),
        )
        await session.flush()
    return await profile(session, actor)


async def _check_update(session: AsyncSession, data: MeUpdate) -> None:
    sent = data.model_fields_set
    if "record_org_id" in sent and data.record_org_id is not None:
        exists = (
            await session.execute(
                select(Organization.id).where(Organization.id == data.record_org_id)
            )
        ).scalar_one_or_none()
        if exists is None:
            raise ValidationFailed("record_org_id", text("组织不存在", "No such organization"))


def _apply_update(user: User, data: MeUpdate) -> None:
    sent = data.model_fields_set
    for name in _PLAIN_FIELDS:
        if name in sent:
            setattr(user, name, getattr(data, name))
    if "skills" in sent:
        user.skills = list(data.skills or [])
    # The record sits in one place: one of ours (by id) or elsewhere (by name).
    if "record_org_id" in sent:
        user.record_org_id = data.record_org_id
        if data.record_org_id is not None:
            user.record_org_name = None
    if "record_org_name" in sent:
        user.record_org_name = data.record_org_name
        if data.record_org_name is not None:
            user.record_org_id = None


async def _set_id_number(session: AsyncSession, user: User, id_number: str | None) -> None:
    """Store the member's ID number, or clear it; a pending claim of the member is dropped
    either way.

    The number is written by one UPDATE in a savepoint; the unique index on the blind index
    decides, also against a concurrent writer.  When another account holds the number the
    member is not told: the number goes into a claim (encrypted) instead of onto the
    account, the profile shows it masked all the same, and an audit entry in the holder's
    record organization lets its officers settle it with both people.  The audit entry names
    the two accounts, never the number."""
    await session.execute(
        delete(IdNumberClaim)
        .where(IdNumberClaim.user_id == user.id)
        .execution_options(synchronize_session=False)
    )
    if id_number is None:
        values: dict[str, object] = {
            "id_number_enc": None,
            "id_number_index": None,
            "id_number_masked": None,
        }
    else:
        index = _id_index(id_number)
        if index == user.id_number_index:
            return
        values = {
            "id_number_enc": encrypt(id_number, context=ID_NUMBER_CONTEXT),
            "id_number_index": index,
            "id_number_masked": mask_id_number(id_number),
        }
    try:
        async with session.begin_nested():
            await session.execute(
                update(User)
                .where(User.id == user.id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
    except IntegrityError:
        assert id_number is not None
        await _claim(session, user, id_number, values)
        return
    for name, value in values.items():
        set_committed_value(user, name, value)


async def _claim(
    session: AsyncSession, user: User, id_number: str, values: dict[str, object]
) -> None:
    holder = (
        await session.execute(
            select(User.id, User.record_org_id).where(
                User.id_number_index == values["id_number_index"]
            )
        )
    ).one_or_none()
    session.add(
        IdNumberClaim(
            user_id=user.id,
            holder_id=holder.id if holder is not None else None,
            id_number_enc=values["id_number_enc"],
            id_number_index=values["id_number_index"],
            id_number_masked=values["id_number_masked"],
        )
    )
    # The account keeps no number, only the masked form the member expects to see.
    await session.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            id_number_enc=None, id_number_index=None, id_number_masked=mask_id_number(id_number)
        )
        .execution_options(synchronize_session=False)
    )
    set_committed_value(user, "id_number_enc", None)
    set_committed_value(user, "id_number_index", None)
    set_committed_value(user, "id_number_masked", mask_id_number(id_number))
    audit(
        session,
        action="profile.id_number_claimed",
        object_type="user",
        object_id=holder.id if holder is not None else user.id,
        org_id=holder.record_org_id if holder is not None else None,
        actor_id=user.id,
        comment="entered the ID number this account holds; an officer to check with both",
    )


def _id_index(id_number: str) -> str:
    """The keyed index an ID number is found by; the number itself is stored encrypted."""
    return blind_index(id_number, context=ID_NUMBER_CONTEXT)
