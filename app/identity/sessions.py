"""Signed-in sessions: one per device, each with a chain of rotating refresh tokens.

Opening one (any sign-in: password, WeChat), listing the caller's devices, signing one out,
logging out with a refresh token, and revoking a session.  Access tokens are issued by
`app.core.tokens`; they carry the session id, so that revoking a session ends them too.
No commit here: the caller owns the transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.authz import Principal
from app.config import Settings
from app.core import clock
from app.core.crypto import sha256_hex
from app.core.errors import NotFound
from app.core.pagination import PageParams, keyset, page_of
from app.core.tokens import issue_access_token, new_opaque
from app.identity.schemas import SessionPage, SessionRead
from app.models.auth import RefreshToken, UserSession
from app.models.user import User

logger = logging.getLogger("quyu.identity")

_DEVICE_MAX = 120


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None


def device_label(user_agent: str | None) -> str | None:
    """What /me/sessions shows for a device: its User-Agent, printable and truncated."""
    if not user_agent:
        return None
    cleaned = "".join(ch for ch in user_agent if ch.isprintable()).strip()
    return cleaned[:_DEVICE_MAX] or None


async def open_session(
    session: AsyncSession,
    user: User,
    *,
    settings: Settings,
    device: str | None,
    auth_method: str = "password",
) -> IssuedTokens:
    """Sign `user` in on a new device: a session, its first refresh token, an access token."""
    now = clock.now()
    user_session = UserSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl_seconds),
        device=device,
        auth_method=auth_method,
    )
    session.add(user_session)
    await session.flush()
    refresh = new_opaque()
    session.add(
        RefreshToken(session_id=user_session.id, token_hash=sha256_hex(refresh), created_at=now)
    )
    await session.flush()
    access, expires_in = issue_access_token(
        kind="user", subject=str(user.id), session_id=user_session.id
    )
    return IssuedTokens(access_token=access, expires_in=expires_in, refresh_token=refresh)


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, *, reason: str) -> bool:
    """Revoke a session (its refresh tokens and access tokens die with it)."""
    revoked = (
        await session.execute(
            update(UserSession)
            .where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=clock.now(), revoked_reason=reason)
            .returning(UserSession.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none() is not None
    if revoked and reason == "refresh_reuse":
        logger.warning(
            "refresh token reused: session revoked", extra={"session_id": str(session_id)}
        )
    return revoked


async def logout(session: AsyncSession, actor: User, refresh_token: str) -> None:
    """Revoke the session the refresh token belongs to, if it is one of the caller's own.

    Anything else (unknown token, someone else's) changes nothing and says nothing.
    """
    family = select(RefreshToken.session_id).where(
        RefreshToken.token_hash == sha256_hex(refresh_token)
    )
    await session.execute(
        update(UserSession)
        .where(
            UserSession.id.in_(family.scalar_subquery()),
            UserSession.user_id == actor.id,
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=clock.now(), revoked_reason="logout")
        .execution_options(synchronize_session=False)
    )


async def list_sessions(session: AsyncSession, actor: Principal, params: PageParams) -> SessionPage:
    """The caller's live sessions, newest first; the one of the access token used is marked
    `current`."""
    stmt = select(UserSession).where(
        UserSession.user_id == actor.person.id,
        UserSession.revoked_at.is_(None),
        UserSession.expires_at > clock.now(),
    )
    stmt = keyset(stmt, [UserSession.created_at, UserSession.id], params, descending=True)
    rows: Sequence[UserSession] = (await session.execute(stmt)).scalars().all()
    items, next_cursor = page_of(rows, params, lambda s: (s.created_at, s.id))
    return SessionPage(
        items=[
            SessionRead(
                id=s.id,
                device=s.device,
                auth_method=s.auth_method,
                created_at=s.created_at,
                last_used_at=s.last_used_at,
                expires_at=s.expires_at,
                current=s.id == actor.session_id,
            )
            for s in items
        ],
        next_cursor=next_cursor,
    )


async def revoke_own_session(session: AsyncSession, actor: User, session_id: uuid.UUID) -> None:
    """Sign one of the caller's devices out; someone else's (or a dead) session is a 404."""
    now = clock.now()
    revoked = (
        await session.execute(
            update(UserSession)
            .where(
                UserSession.id == session_id,
                UserSession.user_id == actor.id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
            .values(revoked_at=now, revoked_reason="signed_out")
            .returning(UserSession.id)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if revoked is None:
        raise NotFound()
