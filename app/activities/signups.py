"""Signing up and cancelling: a seat while there is one, else a place on the waitlist; a
freed seat goes to the first waitlisted.  The counters move in the database (see
`repository.seats`), so that concurrent sign-ups never pass the capacity."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.activities import access
from app.activities.repository import activities as repo
from app.activities.repository import seats
from app.activities.repository import signups as signups_repo
from app.activities.repository.seats import Promotion
from app.activities.schemas import SignupRead
from app.authz import Principal
from app.authz import activities as policy
from app.core import clock
from app.core.errors import AppError, NotFound
from app.core.outbox import record_event
from app.models.activity import ActivityStatus, Signup, SignupStatus

_SIGNUP_ATTEMPTS = 5


async def sign_up(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> SignupRead:
    """Take a seat, or a place on the waitlist when the activity is full."""
    me = principal.person.id
    now = clock.now()
    activity = await access.for_member(session, activity_id)
    if activity.status != ActivityStatus.published.value:
        raise AppError("signup_closed")
    if now >= activity.starts_at or (
        activity.signup_deadline is not None and now >= activity.signup_deadline
    ):
        raise AppError("signup_closed")
    co_hosts = await repo.co_host_ids(session, activity.id)
    await policy.require_may_sign_up(session, principal, activity, co_hosts)
    if await signups_repo.my_active_signup(session, activity.id, me) is not None:
        raise AppError("already_signed_up")

    status: SignupStatus | None = None
    seq: int | None = None
    for _ in range(_SIGNUP_ATTEMPTS):
        if await seats.take_seat(session, activity.id, now):
            status = SignupStatus.confirmed
            break
        seq = await seats.join_waitlist(session, activity.id, now)
        if seq is not None:
            status = SignupStatus.waitlisted
            break
        # Neither: a seat was freed between the two updates, or sign-up just closed.
        if not await seats.signup_window(session, activity.id, now):
            raise AppError("signup_closed")
    if status is None:  # pragma: no cover - needs a seat to flicker five times in a row
        raise AppError("conflict")

    signup = Signup(
        activity_id=activity.id,
        user_id=me,
        status=status.value,
        waitlist_seq=seq,
        created_at=now,
        confirmed_at=now if status is SignupStatus.confirmed else None,
    )
    session.add(signup)
    try:
        await session.flush()
    except IntegrityError as exc:
        # The same member twice at once: the partial unique index keeps one; the counter
        # update above is rolled back with this transaction.
        raise AppError("already_signed_up") from exc
    position = None
    if status is SignupStatus.waitlisted:
        position = await signups_repo.waitlist_position(session, signup.id)
    return SignupRead(
        id=signup.id,
        activity_id=activity.id,
        status=status,
        waitlist_position=position,
        created_at=signup.created_at,
    )


def record_promotions(
    session: AsyncSession,
    activity_id: uuid.UUID,
    promotions: Sequence[Promotion],
    reason: str,
) -> None:
    """An event for each waitlisted member moved into a seat."""
    for p in promotions:
        record_event(
            session,
            "activity.signup.promoted",
            {
                "activity_id": str(activity_id),
                "signup_id": str(p.signup_id),
                "user_id": str(p.user_id),
                "status": SignupStatus.confirmed.value,
                "reason": reason,
            },
            aggregate_id=str(activity_id),
        )


async def cancel_signup(
    session: AsyncSession, principal: Principal, activity_id: uuid.UUID
) -> None:
    """Cancel the caller's own sign-up before the start; a freed seat is filled."""
    me = principal.person.id
    now = clock.now()
    # Lock the activity first, as sign-up does, so that the counters, the waitlist and this
    # member's sign-up cannot move under us (and the lock order never inverts).
    found = await repo.get_hosted(session, activity_id, lock=True)
    if found is None:
        raise NotFound()
    activity = found.activity
    signup = await signups_repo.active_signup(session, activity.id, me)
    if signup is None:
        raise NotFound()
    if now >= activity.starts_at:
        raise AppError("signup_closed")
    was = signup.status
    signup.status = SignupStatus.cancelled.value
    signup.cancelled_at = now
    await session.flush()
    await seats.leave(session, activity.id, was)
    record_event(
        session,
        "activity.signup.cancelled",
        {
            "activity_id": str(activity.id),
            "signup_id": str(signup.id),
            "user_id": str(me),
            "reason": "member",
        },
        aggregate_id=str(activity.id),
    )
    if was == SignupStatus.confirmed.value:
        promotions = await seats.fill_seats(session, activity.id, now)
        record_promotions(session, activity.id, promotions, "seat_freed")
